#!/usr/bin/python3
"""A stand-in for Google's snapshot service (`cloud.vmm.SnapshotService` of
the guest agent's own proto, tests/helpers/snapshot_service.proto), for
tests/gce_agent.rs: the real google_guest_agent connects to it as it would
to the host's, and the test drives it through this process's stdin and
stdout, one line at a time.

Usage: gce_snapshot_service.py PROTO_DIR GEN_DIR PORT AGENT_LOG AGENT_ARGV...

Compiles the proto into GEN_DIR, listens on 127.0.0.1:PORT (in the test's
private network namespace), starts AGENT_ARGV (stdout and stderr to
AGENT_LOG, stdin /dev/null) and waits for its CreateConnection. Then, on
stdout, one JSON line per event:

  {"ready": true, "agent_pid": N, "request_server_info": false}
      the agent connected (its GuestReady)

and for each command read on stdin:

  pre|post OPERATION_ID DISK_LIST TIMEOUT_SECONDS
      sends a SnapshotRequest on the agent's CreateConnection stream, waits
      up to TIMEOUT_SECONDS for the agent's HandleResponsesFromGuest, and
      prints {"response": {...}} (its fields, enums by name, and the
      seconds it took) or {"response": null} when none came, with
      "others": the responses to earlier operations that came meanwhile
      (answered at once). The agent's call is left unanswered until the
      next line, which must be `ack`: the test looks at the machine while
      the agent is still reporting.

  await pre|post OPERATION_ID DISK_LIST TIMEOUT_SECONDS
      the same, without sending the request again (the agent ignores a
      repeated operation id): for a response that had not come in time.

EOF on stdin ends the agent (its pid, SIGTERM, then SIGKILL) and this
process. Every response is also appended to AGENT_LOG + ".responses".
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures


def main():
    proto_dir, gen_dir, port, agent_log = sys.argv[1:5]
    agent_argv = sys.argv[5:]
    from grpc_tools import protoc

    os.makedirs(gen_dir, exist_ok=True)
    rc = protoc.main(
        [
            "protoc",
            "-I" + proto_dir,
            "--python_out=" + gen_dir,
            "--grpc_python_out=" + gen_dir,
            os.path.join(proto_dir, "snapshot_service.proto"),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, gen_dir)
    import grpc
    import snapshot_service_pb2 as pb
    import snapshot_service_pb2_grpc as pb_grpc

    requests = queue.Queue()
    responses = queue.Queue()
    connected = queue.Queue()
    held = []

    class Service(pb_grpc.SnapshotServiceServicer):
        def CreateConnection(self, guest_ready, context):
            connected.put(guest_ready.request_server_info)
            while context.is_active():
                try:
                    msg = requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                yield msg

        def HandleResponsesFromGuest(self, response, context):
            got = {
                "operation_id": response.operation_id,
                "type": pb.OperationType.Name(response.type),
                "agent_return_code": pb.AgentErrorCode.Name(response.agent_return_code),
                "scripts_return_code": response.scripts_return_code,
            }
            with open(agent_log + ".responses", "a") as f:
                f.write(json.dumps(got) + "\n")
            answered = threading.Event()
            responses.put((got, answered))
            # Held until the test has looked (bounded: never a hang).
            answered.wait(timeout=120)
            return pb.ServerAck()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_SnapshotServiceServicer_to_server(Service(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()

    with open(agent_log, "ab") as log:
        agent = subprocess.Popen(
            agent_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )

    def end_agent():
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=5)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        try:
            info = connected.get(timeout=60)
        except queue.Empty:
            say({"ready": False, "agent_pid": agent.pid, "agent_exit": agent.poll()})
            return
        say({"ready": True, "agent_pid": agent.pid, "request_server_info": info})
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "ack":
                while held:
                    held.pop().set()
                continue
            send = words[0] != "await"
            if not send:
                words = words[1:]
            op, op_id, disks, within = words
            kind = {"pre": pb.PRE_SNAPSHOT, "post": pb.POST_SNAPSHOT}[op]
            if send:
                requests.put(
                    pb.GuestMessage(
                        snapshot_request=pb.SnapshotRequest(
                            operation_id=int(op_id), disk_list=disks, type=kind
                        )
                    )
                )
            start = time.monotonic()
            deadline = start + float(within)
            got, others = None, []
            while got is None and time.monotonic() < deadline:
                try:
                    r, answered = responses.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if r["operation_id"] == int(op_id) and r["type"] == pb.OperationType.Name(kind):
                    r["seconds"] = round(time.monotonic() - start, 3)
                    got = r
                    held.append(answered)
                else:
                    others.append(r)
                    answered.set()
            say({"response": got, "others": others})
    finally:
        for answered in held:
            answered.set()
        end_agent()
        server.stop(0)


if __name__ == "__main__":
    main()

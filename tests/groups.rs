//! Consistency groups across VMs (SPEC.md §11), end to end against a real
//! three-node etcd cluster on loopback ports with TLS and client
//! certificates: three members are three `quiesce snapshot --group` runs,
//! each with its own scratch filesystem, run directory and state
//! directory. "Frozen" and "not frozen" are proved by writes, which
//! scripts ran by their marker files, the group's verdict by the status.

mod common;

use common::etcd::{have_etcd, Cluster};
use common::scratchfs::ScratchFs;
use common::{signal, Run, Scratch, Setup};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A hang guard, never a speed assertion.
const HANG: Duration = Duration::from_secs(60);
const FROZEN_PROBE: Duration = Duration::from_millis(300);

macro_rules! require_etcd {
    () => {
        require_root!("freezing scratch filesystems needs CAP_SYS_ADMIN");
        if !have_etcd() {
            eprintln!("SKIPPED: etcd is not installed (scripts/test.sh installs etcd-server)");
            return;
        }
    };
}

/// One member: its set-up (config, scripts, run and state directories)
/// and its filesystem. Fields drop in order: thawed and unmounted first.
struct Member {
    name: String,
    fs: ScratchFs,
    s: Setup,
}

impl Member {
    fn new(name: &str) -> Member {
        let s = Setup::new(&format!("group-{name}"));
        let fs = ScratchFs::new(&s.s.dir, "data", "ext4");
        Member {
            name: name.into(),
            fs,
            s,
        }
    }

    /// `quiesce snapshot --group NAME` of this member, running `cmd`.
    fn spawn(&self, groups: &Path, group: &str, extra: &[&str], cmd: &str) -> Child {
        self.spawn_with(self.s.command(), groups, group, extra, cmd)
    }

    /// [`Member::spawn`] in the network namespace `netns`.
    fn spawn_in(&self, netns: &str, groups: &Path, extra: &[&str], cmd: &str) -> Child {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_quiesce")]);
        c.args(self.s.global_args());
        self.spawn_with(c, groups, "g", extra, cmd)
    }

    fn spawn_with(
        &self,
        mut c: std::process::Command,
        groups: &Path,
        group: &str,
        extra: &[&str],
        cmd: &str,
    ) -> Child {
        c.arg("--group")
            .arg(group)
            .arg("--groups-dir")
            .arg(groups)
            .arg("--group-member")
            .arg(&self.name)
            .args(extra)
            .args(["snapshot", "--json", "--max-freeze", "30", "--mount"])
            .arg(self.fs.path())
            .args(["--", "sh", "-c", cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    }

    fn writable(&self) -> bool {
        self.fs.writable_within(Duration::from_secs(30))
    }
}

/// The cluster, the group file's directory, a shared directory the
/// snapshot commands meet in (never frozen), and the members.
struct Group {
    members: Vec<Member>,
    cluster: Cluster,
    groups: PathBuf,
    meet: PathBuf,
    _scratch: Scratch,
}

fn group(members: &[&str], join: u64, lease: u64) -> Group {
    group_on(members, join, lease, None)
}

/// [`group`], etcd also served on `ip`, and the group's endpoints on it.
fn group_on(members: &[&str], join: u64, lease: u64, ip: Option<&str>) -> Group {
    let scratch = Scratch::new("group");
    let cluster = Cluster::start_on(&scratch.path("etcd"), ip);
    let groups = scratch.path("groups.d");
    cluster.group_file(&groups, "g", members, join, lease);
    let meet = scratch.mkdir("meet", 0o755);
    Group {
        members: members.iter().map(|m| Member::new(m)).collect(),
        cluster,
        groups,
        meet,
        _scratch: scratch,
    }
}

impl Group {
    fn spawn_all(&self, extra: &[&str], cmd: impl Fn(&Member) -> String) -> Vec<Child> {
        self.members
            .iter()
            .map(|m| m.spawn(&self.groups, "g", extra, &cmd(m)))
            .collect()
    }

    /// A command that says it is in its window, then waits (at most 10 s)
    /// for the test's "go".
    fn meeting(&self, m: &Member) -> String {
        format!(
            "touch {d}/in-{n}; i=0; while [ ! -e {d}/go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
            d = self.meet.display(),
            n = m.name
        )
    }

    fn wait_in_window(&self, names: &[&str]) {
        let end = Instant::now() + HANG;
        while !names
            .iter()
            .all(|n| self.meet.join(format!("in-{n}")).exists())
        {
            assert!(Instant::now() < end, "not every member reached its window");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn go(&self) {
        std::fs::write(self.meet.join("go"), "").unwrap();
    }
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

fn group_of(run: &Run) -> Value {
    run.json()["group"].clone()
}

/// A member's run that the round's abort ended: exit 2, `GroupAborted`.
fn assert_aborted(name: &str, run: &Run) {
    assert_eq!(run.code, 2, "{name}: {}", run.stderr);
    assert!(
        run.error_names().contains(&"GroupAborted".to_string()),
        "{name}: {:?}",
        run.error_names()
    );
}

#[test]
fn a_clean_round_of_three_freezes_them_at_one_instant() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 3);
    let children = g.spawn_all(&[], |m| g.meeting(m));
    g.wait_in_window(&["m0", "m1", "m2"]);
    // The common instant, seen from outside: all three frozen at once.
    for m in &g.members {
        assert!(
            !m.fs.writable_within(FROZEN_PROBE),
            "{} is not frozen while every snapshot command runs",
            m.name
        );
    }
    g.go();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    for (m, run) in g.members.iter().zip(&runs) {
        assert_eq!(run.code, 0, "{}: {}", m.name, run.stderr);
        let j = run.json();
        assert_eq!(j["consistency"], "application", "{}", m.name);
        let grp = group_of(run);
        assert_eq!(grp["consistent"], true, "{}: {grp}", m.name);
        assert_eq!(grp["proof"]["holds"], true);
        let last = grp["proof"]["lastFrozenRevision"].as_i64().unwrap();
        let first = grp["proof"]["firstThawRevision"].as_i64().unwrap();
        assert!(last < first, "{grp}");
        let stages: Vec<&str> = grp["barriers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["joined", "pre", "frozen", "snapshot"]);
        assert_eq!(grp["members"].as_array().unwrap().len(), 3);
        assert_eq!(m.s.scripts_ran(), "pre\npost\n", "{}", m.name);
        assert!(m.writable(), "{} left frozen", m.name);
    }
    let ids: std::collections::HashSet<String> = runs
        .iter()
        .map(|r| group_of(r)["round"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "the three members were in one round: {ids:?}");
}

#[test]
fn a_member_whose_pre_script_fails_makes_nobody_freeze() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 3);
    let m1 = &g.members[1].s;
    std::fs::write(
        &m1.pre,
        format!("#!/bin/sh\necho pre >> {}\nexit 3\n", m1.marker.display()),
    )
    .unwrap();
    let children = g.spawn_all(&[], |m| g.meeting(m));
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    for (m, run) in g.members.iter().zip(&runs) {
        assert_aborted(&m.name, run);
        let grp = group_of(run);
        assert_eq!(grp["consistent"], false);
        assert_eq!(grp["abort"]["member"], "m1", "{}: {grp}", m.name);
        assert_eq!(grp["abort"]["stage"], "pre");
        assert!(
            run.json()["phases"].get("freeze").is_none(),
            "{} froze",
            m.name
        );
        assert!(
            !g.meet.join(format!("in-{}", m.name)).exists(),
            "{}'s snapshot command ran",
            m.name
        );
        // The pre-script started, so its post-script ran: once.
        assert!(
            m.s.scripts_ran().ends_with("post\n"),
            "{}: {:?}",
            m.name,
            m.s.scripts_ran()
        );
        assert_eq!(m.s.scripts_ran().matches("post").count(), 1);
        assert!(m.writable());
    }
}

#[test]
fn a_member_that_never_joins_makes_nobody_freeze() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 3);
    let started = Instant::now();
    let children: Vec<Child> = g.members[..2]
        .iter()
        .map(|m| m.spawn(&g.groups, "g", &["--group-join", "2"], &g.meeting(m)))
        .collect();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    assert!(started.elapsed() < HANG);
    for (m, run) in g.members.iter().zip(&runs) {
        assert_eq!(run.code, 2, "{}: {}", m.name, run.stderr);
        assert_eq!(run.error_names(), ["GroupAborted"], "{}", m.name);
        assert!(
            run.stderr.contains("m2"),
            "{}: the missing member is named: {}",
            m.name,
            run.stderr
        );
        // Nothing ran: the round is joined before any script.
        assert_eq!(m.s.scripts_ran(), "", "{}", m.name);
        assert!(m.writable());
    }
}

#[test]
fn a_member_killed_in_its_window_makes_the_others_thaw_and_run_their_posts() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 2);
    for m in &g.members {
        m.s.post_logs_recovery("");
    }
    // m0's command stays in its window; the others' end at once, so they
    // wait at the snapshot barrier when m0 dies.
    let children = g.spawn_all(&[], |m| {
        let stay = if m.name == "m0" { "sleep 25" } else { "true" };
        format!("touch {}/in-{}; {stay}", g.meet.display(), m.name)
    });
    g.wait_in_window(&["m0", "m1", "m2"]);
    std::thread::sleep(Duration::from_millis(200));
    let mut children = children.into_iter();
    let mut victim = children.next().unwrap();
    let killed = Instant::now();
    signal(victim.id() as i32, Signal::SIGKILL);
    let _ = victim.wait();
    let runs: Vec<Run> = children.map(finish).collect();
    eprintln!(
        "the others ended {:?} after m0's SIGKILL (lease 2 s)",
        killed.elapsed()
    );
    for (m, run) in g.members[1..].iter().zip(&runs) {
        assert_aborted(&m.name, run);
        let grp = group_of(run);
        assert_eq!(grp["abort"]["member"], "m0", "{}: {grp}", m.name);
        assert_eq!(grp["consistent"], false);
        assert!(m.writable(), "{} left frozen", m.name);
        assert_eq!(m.s.scripts_ran(), "pre\npost none\n", "{}", m.name);
    }
    // m0: its watchdog thawed it, its post guard ran its post-script.
    let m0 = &g.members[0];
    assert!(m0.writable(), "m0 left frozen");
    let end = Instant::now() + HANG;
    while !m0.s.scripts_ran().contains("post runner-died") {
        assert!(
            Instant::now() < end,
            "m0's post-script never ran: {:?}",
            m0.s.scripts_ran()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(m0.s.scripts_ran().matches("post").count(), 1);
    // The aborted round is over for everyone: the next round opens at once,
    // while the dead member's lease may still live (found by bench.sh).
    let again: Vec<Run> = g
        .spawn_all(&[], |_| "true".to_string())
        .into_iter()
        .map(finish)
        .collect();
    for (m, run) in g.members.iter().zip(&again) {
        assert_eq!(run.code, 0, "{} in the next round: {}", m.name, run.stderr);
        assert_eq!(group_of(run)["consistent"], true);
    }
    common::end_quiesce_processes_of(&m0.s.s.dir);
}

#[test]
fn an_etcd_node_killed_mid_round_leaves_the_round_to_complete_on_quorum() {
    require_etcd!();
    let mut g = group(&["m0", "m1", "m2"], 30, 3);
    let children = g.spawn_all(&[], |m| g.meeting(m));
    g.wait_in_window(&["m0", "m1", "m2"]);
    // The leader: the others elect a new one while the members wait on
    // them, and the round goes on through it.
    let leader = g.cluster.leader();
    g.cluster.kill_node(leader);
    g.go();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    for (m, run) in g.members.iter().zip(&runs) {
        assert_eq!(run.code, 0, "{}: {}", m.name, run.stderr);
        assert_eq!(group_of(run)["consistent"], true, "{}", m.name);
        assert!(m.writable());
    }
}

#[test]
fn quorum_lost_mid_window_thaws_every_member_and_none_reports_a_group() {
    require_etcd!();
    let mut g = group(&["m0", "m1", "m2"], 30, 2);
    let started = Instant::now();
    let children = g.spawn_all(&[], |m| g.meeting(m));
    g.wait_in_window(&["m0", "m1", "m2"]);
    g.cluster.kill_node(0);
    g.cluster.kill_node(1);
    g.go();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    eprintln!(
        "quorum lost: every member ended {:?} after its start (--max-freeze 30, lease 2 s)",
        started.elapsed()
    );
    for (m, run) in g.members.iter().zip(&runs) {
        assert_aborted(&m.name, run);
        assert_ne!(group_of(run)["consistent"], true);
        assert_ne!(run.json()["consistency"], "application");
        assert!(m.writable(), "{} left frozen", m.name);
        assert_eq!(m.s.scripts_ran(), "pre\npost\n", "{}", m.name);
    }
}

#[test]
fn check_group_reports_each_endpoint_and_who_is_a_member() {
    require_etcd!();
    let mut g = group(&["m0", "m1", "m2"], 30, 3);
    g.cluster.kill_node(2);
    let m = &g.members[0];
    let check = |member: &str| {
        let mut c = m.s.command();
        c.arg("--group").arg("g").arg("--groups-dir").arg(&g.groups);
        c.args([
            "--group-member",
            member,
            "check",
            "--json",
            "--mount",
            m.fs.path(),
        ]);
        Run::from(c.output().unwrap())
    };
    let run = check("m0");
    let eps = g.cluster.endpoints();
    for e in &eps[..2] {
        assert!(
            run.stderr.contains(&format!("endpoint {e}: etcd 3.")),
            "{}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains(&format!("endpoint {}: etcd", eps[2])),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("this member (m0) is listed"),
        "{}",
        run.stderr
    );
    assert!(!run
        .error_names()
        .iter()
        .any(|e| e.starts_with("Group") || e == "IncorrectGroupFile"));
    assert_eq!(group_of(&run)["members"].as_array().unwrap().len(), 3);
    let run = check("intruder");
    assert!(
        run.error_names()
            .contains(&"IncorrectGroupFile".to_string()),
        "{:?}",
        run.error_names()
    );
    assert_ne!(run.code, 0);
}

#[test]
fn rounds_back_to_back_and_a_racing_duplicate_member() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 3);
    let quick = |_: &Member| "true".to_string();
    let first: Vec<Run> = g.spawn_all(&[], quick).into_iter().map(finish).collect();
    // At once, while the first round's leases still live: a new round.
    let children = g.spawn_all(&[], |m| g.meeting(m));
    g.wait_in_window(&["m0", "m1", "m2"]);
    // A second m0 racing into the running round is refused and runs nothing.
    let dup = Member::new("m0");
    let racer = finish(dup.spawn(&g.groups, "g", &["--group-join", "3"], "true"));
    g.go();
    let second: Vec<Run> = children.into_iter().map(finish).collect();
    let round = |r: &Run| group_of(r)["round"].as_str().unwrap().to_string();
    for (a, b) in first.iter().zip(&second) {
        assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
        assert_eq!(group_of(b)["consistent"], true);
        assert_ne!(round(a), round(b), "the second round is a new one");
    }
    assert_eq!(round(&second[0]), round(&second[2]));
    assert_eq!(racer.code, 2, "{}", racer.stderr);
    assert_eq!(racer.error_names(), ["GroupRoundClosed"]);
    assert_eq!(dup.s.scripts_ran(), "");
    assert!(dup.writable());
}

/// A network namespace joined to the host by a veth pair; dropped: both
/// removed (the namespace's end goes with it).
struct Netns {
    name: String,
    host_if: String,
    subnet: u32,
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

impl Netns {
    fn new() -> Netns {
        let pid = std::process::id();
        let n = Netns {
            name: format!("qzg{pid}"),
            host_if: format!("qzh{}", pid % 100_000),
            subnet: 20 + pid % 200,
        };
        let ns_if = format!("qzn{}", pid % 100_000);
        ip(&["netns", "add", &n.name]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &n.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip()),
            "dev",
            &n.host_if,
        ]);
        ip(&["link", "set", &n.host_if, "up"]);
        let ns_ip = format!("10.231.{}.2/30", n.subnet);
        ip(&["-n", &n.name, "addr", "add", &ns_ip, "dev", &ns_if]);
        ip(&["-n", &n.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &n.name, "link", "set", "lo", "up"]);
        n
    }

    fn host_ip(&self) -> String {
        format!("10.231.{}.1", self.subnet)
    }

    /// The partition: the link taken down.
    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_member_cut_off_by_its_link_going_down_thaws_and_so_do_the_others() {
    require_etcd!();
    let netns = Netns::new();
    let g = group_on(&["m0", "m1", "m2"], 30, 2, Some(&netns.host_ip()));
    let mut children: Vec<Child> = g.members[..2]
        .iter()
        .map(|m| m.spawn(&g.groups, "g", &[], &g.meeting(m)))
        .collect();
    let m2 = &g.members[2];
    children.push(m2.spawn_in(&netns.name, &g.groups, &[], &g.meeting(m2)));
    g.wait_in_window(&["m0", "m1", "m2"]);
    netns.cut();
    let cut = Instant::now();
    g.go();
    let runs: Vec<Run> = children.into_iter().map(finish).collect();
    eprintln!(
        "partition: every member ended {:?} after m2's link went down (lease 2 s)",
        cut.elapsed()
    );
    for (m, run) in g.members.iter().zip(&runs) {
        assert_aborted(&m.name, run);
        assert_ne!(group_of(run)["consistent"], true, "{}", m.name);
        assert!(m.writable(), "{} left frozen", m.name);
        assert_eq!(m.s.scripts_ran(), "pre\npost\n", "{}", m.name);
    }
    let m2_abort = &group_of(&runs[2])["abort"];
    eprintln!(
        "m2 (cut off) saw: {m2_abort}; m0 saw: {}",
        group_of(&runs[0])["abort"]
    );
    assert_eq!(group_of(&runs[0])["abort"]["member"], "m2");
}

#[test]
fn freeze_group_members_and_snapshot_members_share_one_round() {
    require_etcd!();
    let g = group(&["m0", "m1"], 30, 3);
    // m0 runs `freeze --group` (no scripts), m1 `snapshot --group`.
    let m0 = &g.members[0];
    let mut c = m0.s.command();
    c.arg("--group").arg("g").arg("--groups-dir").arg(&g.groups);
    c.args([
        "--group-member",
        "m0",
        "freeze",
        "--json",
        "--max-freeze",
        "30",
        "--mount",
    ]);
    c.arg(m0.fs.path()).args(["--", "sh", "-c", &g.meeting(m0)]);
    let freezer = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let snapper = g.members[1].spawn(&g.groups, "g", &[], &g.meeting(&g.members[1]));
    g.wait_in_window(&["m0", "m1"]);
    for m in &g.members {
        assert!(!m.fs.writable_within(FROZEN_PROBE), "{} not frozen", m.name);
    }
    g.go();
    for (m, run) in g.members.iter().zip([finish(freezer), finish(snapper)]) {
        assert_eq!(run.code, 0, "{}: {}", m.name, run.stderr);
        assert_eq!(group_of(&run)["consistent"], true, "{}", m.name);
        assert!(m.writable());
    }
    assert_eq!(g.members[0].s.scripts_ran(), "", "freeze runs no script");
}

#[test]
fn a_member_killed_in_its_pre_script_makes_nobody_freeze() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 2);
    for m in &g.members {
        m.s.post_logs_recovery("");
    }
    let m0 = &g.members[0].s;
    std::fs::write(
        &m0.pre,
        format!(
            "#!/bin/sh\necho pre >> {}\ntouch {}/pre-m0\nsleep 20\n",
            m0.marker.display(),
            g.meet.display()
        ),
    )
    .unwrap();
    let mut children = g.spawn_all(&[], |m| g.meeting(m)).into_iter();
    let end = Instant::now() + HANG;
    while !g.meet.join("pre-m0").exists() {
        assert!(Instant::now() < end, "m0's pre-script never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut victim = children.next().unwrap();
    signal(victim.id() as i32, Signal::SIGKILL);
    let _ = victim.wait();
    let killed = Instant::now();
    let runs: Vec<Run> = children.map(finish).collect();
    eprintln!(
        "the others ended {:?} after m0's SIGKILL in its pre-script (lease 2 s)",
        killed.elapsed()
    );
    for (m, run) in g.members[1..].iter().zip(&runs) {
        assert_eq!(run.code, 2, "{}: {}", m.name, run.stderr);
        let grp = group_of(run);
        assert_eq!(grp["abort"]["member"], "m0", "{}: {grp}", m.name);
        assert_eq!(grp["abort"]["stage"], "pre");
        assert!(
            run.json()["phases"].get("freeze").is_none(),
            "{} froze",
            m.name
        );
        assert_eq!(m.s.scripts_ran(), "pre\npost none\n", "{}", m.name);
        assert!(m.writable());
    }
    let m0 = &g.members[0];
    while !m0.s.scripts_ran().contains("post runner-died") {
        assert!(
            Instant::now() < end,
            "m0's post-script never ran: {:?}",
            m0.s.scripts_ran()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!g.meet.join("in-m0").exists());
    common::end_quiesce_processes_of(&m0.s.s.dir);
}

#[test]
fn sigterm_to_a_member_waiting_at_a_barrier_aborts_the_round_at_once() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 5);
    // m0's command ends at once: m0 waits at the snapshot barrier for the
    // others, whose commands wait for the test's "go" (never given).
    let children = g.spawn_all(&["-v"], |m| {
        if m.name == "m0" {
            format!("touch {}/in-m0", g.meet.display())
        } else {
            g.meeting(m)
        }
    });
    g.wait_in_window(&["m0", "m1", "m2"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut children = children.into_iter();
    let m0 = children.next().unwrap();
    signal(m0.id() as i32, Signal::SIGTERM);
    let termed = Instant::now();
    let run0 = finish(m0);
    assert_eq!(run0.code, 128 + 15, "{}", run0.stderr);
    assert!(g.members[0].writable());
    assert_eq!(g.members[0].s.scripts_ran(), "pre\npost\n");
    // The others give up on m0's abort key while their own commands still
    // run, not at m0's lease expiry (5 s) nor at their deadline: they thaw,
    // then their commands are killed.
    let runs: Vec<Run> = children.map(finish).collect();
    eprintln!(
        "the others ended {:?} after m0's SIGTERM (lease 5 s)",
        termed.elapsed()
    );
    for (m, run) in g.members[1..].iter().zip(&runs) {
        assert_eq!(run.code, 2, "{}: {}", m.name, run.stderr);
        let grp = group_of(run);
        assert_eq!(grp["abort"]["member"], "m0", "{}: {grp}", m.name);
        assert!(m.writable());
        assert_eq!(m.s.scripts_ran(), "pre\npost\n", "{}", m.name);
        // Thawed at once, not after their commands: those were killed.
        let snap = &run.json()["phases"]["snapshot"];
        assert!(
            !snap["killedPids"].as_array().unwrap().is_empty(),
            "{}: {snap}",
            m.name
        );
    }
    // The trail: one record per barrier passed, and the abort (-v echoes
    // every audit record on stderr).
    assert!(run0.stderr.contains("group-join"), "{}", run0.stderr);
    assert!(
        run0.stderr.matches("group-barrier").count() >= 3,
        "{}",
        run0.stderr
    );
    assert!(runs[0].stderr.contains("group-abort"), "{}", runs[0].stderr);
}

#[test]
fn a_member_killed_while_waiting_for_the_others_to_join_makes_nobody_freeze() {
    require_etcd!();
    let g = group(&["m0", "m1", "m2"], 30, 2);
    let m0 = &g.members[0];
    let mut first = m0.spawn(&g.groups, "g", &[], &g.meeting(m0));
    // m0 is in the round once its key is there.
    let end = Instant::now() + HANG;
    loop {
        let o = g
            .cluster
            .etcdctl()
            .args(["get", "--prefix", "--keys-only", "quiesce/groups/g/rounds/"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).contains("/joined/m0") {
            break;
        }
        assert!(Instant::now() < end, "m0 never joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(first.id() as i32, Signal::SIGKILL);
    let _ = first.wait();
    let runs: Vec<Run> = g.members[1..]
        .iter()
        .map(|m| m.spawn(&g.groups, "g", &["--group-join", "4"], &g.meeting(m)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(finish)
        .collect();
    for (m, run) in g.members[1..].iter().zip(&runs) {
        assert_aborted(&m.name, run);
        assert!(
            run.json()["phases"].get("freeze").is_none(),
            "{} froze",
            m.name
        );
        let ran = m.s.scripts_ran();
        assert_eq!(
            ran.matches("pre").count(),
            ran.matches("post").count(),
            "{}: {ran}",
            m.name
        );
        assert!(m.writable());
    }
    assert_eq!(m0.s.scripts_ran(), "", "m0 died before any script");
    common::end_quiesce_processes_of(&m0.s.s.dir);
}

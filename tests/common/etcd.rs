//! A three-node etcd v3 cluster for the consistency-group tests (SPEC §11),
//! started by the test on loopback ports, its clients on TLS with client
//! certificates made by `openssl` in the test's scratch directory; every
//! node ended (by its pid) when the cluster is dropped, panics included.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether etcd is installed (scripts/test.sh installs etcd-server).
pub fn have_etcd() -> bool {
    Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists()
}

/// The TLS files of a cluster and its clients.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate.
    /// `ip`: one more address the server certificate is for.
    pub fn make(dir: &Path, ip: Option<&str>) -> Pki {
        let san = match ip {
            Some(ip) => format!(
                "subjectAltName=IP:127.0.0.1,IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
            None => "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n".into(),
        };
        fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=quiesce-test-ca",
            ],
        );
        for (name, ext) in [
            ("server", san.as_str()),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN=quiesce-{name}"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        for f in ["ca.key", "server.key", "client.key"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
        for f in ["ca.pem", "server.pem", "client.pem"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// One node of the cluster.
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
}

/// A three-node cluster; dropped: every node killed and reaped.
pub struct Cluster {
    pub dir: PathBuf,
    pub pki: Pki,
    pub nodes: Vec<Node>,
    /// Another address the clients are served on (a veth's, for a member
    /// in a network namespace of its own); the endpoints then use it.
    pub ip: Option<String>,
}

/// Loopback ports of this test process: far apart per process and call,
/// and below the kernel's ephemeral range (32768 up), where an outgoing
/// connection of anything on the machine may hold one first.
fn ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 21000 + (std::process::id() % 110) as u16 * 100;
    let k = NEXT.fetch_add(n as u16, Ordering::SeqCst);
    (0..n as u16).map(|i| base + k + i).collect()
}

impl Cluster {
    /// Starts three nodes and waits until the cluster answers.
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_on(dir, None)
    }

    /// [`Cluster::start`], its clients also served on `ip`.
    pub fn start_on(dir: &Path, ip: Option<&str>) -> Cluster {
        let pki = Pki::make(&dir.join("pki"), ip);
        let p = ports(6);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: p[i],
                peer_port: p[3 + i],
                child: None,
            })
            .collect();
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            pki,
            nodes,
            ip: ip.map(String::from),
        };
        for i in 0..3 {
            c.start_node(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}=http://127.0.0.1:{}", n.name, n.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_node(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let n = &self.nodes[i];
        let data = self.dir.join(format!("data-{}", n.name));
        let log = fs::File::create(self.dir.join(format!("{}.log", n.name))).unwrap();
        let mut client = format!("https://127.0.0.1:{}", n.client_port);
        if let Some(ip) = &self.ip {
            client = format!("https://{ip}:{},{client}", n.client_port);
        }
        let peer = format!("http://127.0.0.1:{}", n.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &n.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--initial-cluster-token",
                &format!("quiesce-{}", std::process::id()),
            ])
            .arg("--cert-file")
            .arg(&self.pki.server_cert)
            .arg("--key-file")
            .arg(&self.pki.server_key)
            .arg("--trusted-ca-file")
            .arg(&self.pki.ca)
            .args([
                "--client-cert-auth",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd");
        self.nodes[i].child = Some(child);
    }

    /// The client URLs of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let host = self.ip.as_deref().unwrap_or("127.0.0.1");
                format!("https://{host}:{}", n.client_port)
            })
            .collect()
    }

    /// `etcdctl` on this cluster, as a client with the test's certificate.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .arg(format!("--cacert={}", self.pki.ca.display()))
            .arg(format!("--cert={}", self.pki.client_cert.display()))
            .arg(format!("--key={}", self.pki.client_key.display()))
            .arg("--dial-timeout=1s")
            .arg("--command-timeout=2s");
        cmd
    }

    fn wait_healthy(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let ok = self
                .etcdctl()
                .args(["put", "quiesce-test/ready", "1"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < end,
                "etcd cluster never became healthy (logs in {})",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The index of the node that leads the cluster now, as every node's
    /// status says (`etcdctl endpoint status`).
    pub fn leader(&self) -> usize {
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .expect("etcdctl endpoint status");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let endpoints = self.endpoints();
        v.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["Status"]["header"]["member_id"] == e["Status"]["leader"])
            .and_then(|e| e["Endpoint"].as_str())
            .and_then(|ep| endpoints.iter().position(|x| x == ep))
            .unwrap_or_else(|| panic!("no leader in {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Kills node `i` (SIGKILL, by its pid) and reaps it.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes the group file `dir/NAME.json` (root's, 600) for `members`.
    pub fn group_file(
        &self,
        dir: &Path,
        name: &str,
        members: &[&str],
        join: u64,
        lease: u64,
    ) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        let v = serde_json::json!({
            "endpoints": self.endpoints(),
            "caFile": self.pki.ca,
            "certFile": self.pki.client_cert,
            "keyFile": self.pki.client_key,
            "members": members,
            "joinSeconds": join,
            "leaseSeconds": lease,
        });
        let p = dir.join(format!("{name}.json"));
        fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}

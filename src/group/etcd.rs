//! A small etcd v3 client: the few calls a round needs (lease grant and
//! keep-alive, put, range, transaction), through etcd's own gRPC gateway
//! (`POST /v3/...`, JSON, keys and values in base64) over HTTPS with a
//! client certificate.
//!
//! Why not gRPC (`etcd-client` on tonic): it brings an async runtime, HTTP/2
//! and protobuf code generation into a binary whose single-VM path must not
//! pay for them; the gateway is part of every etcd v3 server (3.4 and
//! later serve it under `/v3/`) and needs one blocking HTTPS request per
//! call, each bounded by its own timeout — what a freeze window needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// Why a call to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint answered ({0})")]
    Unreachable(String),
    #[error("etcd refused the call {call}: {detail}")]
    Refused { call: &'static str, detail: String },
    #[error("etcd answered {call} with something unexpected: {detail}")]
    Malformed { call: &'static str, detail: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
}

/// The TLS material of a group, read from its checked files.
pub struct TlsFiles {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// One key as a range returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A comparison of a transaction.
pub enum Compare<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key's value is exactly this.
    ValueIs(&'a str, &'a str),
    /// The key was last modified at this revision.
    ModRevisionIs(&'a str, i64),
}

/// An operation of a transaction.
pub enum Op<'a> {
    Put {
        key: &'a str,
        value: &'a str,
        lease: i64,
    },
    DeletePrefix(&'a str),
}

/// A client of one etcd cluster: its endpoints tried in turn, the one that
/// last answered first.
#[derive(Clone)]
pub struct Etcd {
    agent: ureq::Agent,
    endpoints: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
}

impl Etcd {
    /// A client of `endpoints` (`https://host:port`; `http://` for a
    /// cluster without TLS), with `tls` for every HTTPS endpoint.
    pub fn new(endpoints: &[String], tls: Option<&TlsFiles>) -> Result<Etcd, EtcdError> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .max_idle_connections_per_host(2);
        if let Some(t) = tls {
            b = b.tls_config(Arc::new(client_config(t)?));
        }
        Ok(Etcd {
            agent: b.build(),
            endpoints: Arc::new(
                endpoints
                    .iter()
                    .map(|e| e.trim_end_matches('/').into())
                    .collect(),
            ),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// One call, `timeout` at most in all; an endpoint that cannot be
    /// reached is skipped for the next, and the first that answers is kept.
    fn call(
        &self,
        call: &'static str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no endpoint configured");
        // `timeout` bounds the whole call, every endpoint tried included.
        let end = Instant::now() + timeout;
        for i in 0..n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("{last}; no time left for the other endpoints");
                break;
            }
            let at = (first + i) % n;
            let url = format!("{}/v3/{call}", self.endpoints[at]);
            let req = self.agent.post(&url).timeout(left);
            match req
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
            {
                Ok(resp) => {
                    self.current.store(at, Ordering::Relaxed);
                    let text = resp.into_string().unwrap_or_default();
                    return serde_json::from_str(&text).map_err(|e| EtcdError::Malformed {
                        call,
                        detail: e.to_string(),
                    });
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    // 503: this member lost its quorum; another may not have.
                    if code == 503 {
                        last = format!("{url}: {code} {text}");
                        continue;
                    }
                    return Err(EtcdError::Refused {
                        call,
                        detail: format!("{code} {}", text.trim()),
                    });
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    /// The cluster's version, from the first endpoint that answers.
    pub fn status(&self, timeout: Duration) -> Result<String, EtcdError> {
        let v = self.call("maintenance/status", &json!({}), timeout)?;
        Ok(v["version"].as_str().unwrap_or("unknown").to_string())
    }

    /// A new lease of `ttl` seconds: its id.
    pub fn grant(&self, ttl: u64, timeout: Duration) -> Result<i64, EtcdError> {
        let v = self.call("lease/grant", &json!({"TTL": ttl}), timeout)?;
        int(&v["ID"])
            .filter(|id| *id != 0)
            .ok_or(EtcdError::Malformed {
                call: "lease/grant",
                detail: v.to_string(),
            })
    }

    /// Keeps `lease` alive once: the TTL left, 0 when it has expired.
    pub fn keep_alive(&self, lease: i64, timeout: Duration) -> Result<i64, EtcdError> {
        let v = self.call(
            "lease/keepalive",
            &json!({"ID": lease.to_string()}),
            timeout,
        )?;
        Ok(int(&v["result"]["TTL"]).unwrap_or(0))
    }

    /// Revokes `lease`: every key under it is deleted.
    pub fn revoke(&self, lease: i64, timeout: Duration) -> Result<(), EtcdError> {
        self.call("lease/revoke", &json!({"ID": lease.to_string()}), timeout)
            .map(|_| ())
    }

    /// Puts `key`, under `lease` (0: none): the revision of the put.
    pub fn put(
        &self,
        key: &str,
        value: &str,
        lease: i64,
        timeout: Duration,
    ) -> Result<i64, EtcdError> {
        let v = self.call("kv/put", &put_body(key, value, lease), timeout)?;
        revision(&v, "kv/put")
    }

    /// Every key under `prefix`, and the revision the read saw.
    pub fn range_prefix(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(Vec<Kv>, i64), EtcdError> {
        self.range_under(prefix, false, timeout)
    }

    /// [`Etcd::range_prefix`] answered by the endpoint's own copy
    /// (`serializable`): no leader needed, so it does not wait out an
    /// election, at the price of a read that may lag a moment behind.
    pub fn range_prefix_local(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(Vec<Kv>, i64), EtcdError> {
        self.range_under(prefix, true, timeout)
    }

    fn range_under(
        &self,
        prefix: &str,
        serializable: bool,
        timeout: Duration,
    ) -> Result<(Vec<Kv>, i64), EtcdError> {
        let body = json!({
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "serializable": serializable,
        });
        let v = self.call("kv/range", &body, timeout)?;
        let kvs = v["kvs"]
            .as_array()
            .map_or(Ok(Vec::new()), |a| a.iter().map(kv).collect())?;
        Ok((kvs, revision(&v, "kv/range")?))
    }

    /// One key, if it exists.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Option<Kv>, EtcdError> {
        let v = self.call("kv/range", &json!({"key": B64.encode(key)}), timeout)?;
        match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(k) => kv(k).map(Some),
            None => Ok(None),
        }
    }

    /// A transaction: `then` when every comparison holds. Whether it held,
    /// and the transaction's revision.
    pub fn txn(
        &self,
        when: &[Compare<'_>],
        then: &[Op<'_>],
        timeout: Duration,
    ) -> Result<(bool, i64), EtcdError> {
        let compare: Vec<Value> = when.iter().map(compare_body).collect();
        let success: Vec<Value> = then.iter().map(op_body).collect();
        let body = json!({"compare": compare, "success": success});
        let v = self.call("kv/txn", &body, timeout)?;
        Ok((
            v["succeeded"].as_bool().unwrap_or(false),
            revision(&v, "kv/txn")?,
        ))
    }
}

fn put_body(key: &str, value: &str, lease: i64) -> Value {
    let mut b = json!({"key": B64.encode(key), "value": B64.encode(value)});
    if lease != 0 {
        b["lease"] = Value::from(lease.to_string());
    }
    b
}

fn compare_body(c: &Compare<'_>) -> Value {
    match c {
        Compare::Absent(k) => {
            json!({"key": B64.encode(k), "target": "VERSION", "result": "EQUAL", "version": "0"})
        }
        Compare::ValueIs(k, v) => {
            json!({"key": B64.encode(k), "target": "VALUE", "result": "EQUAL", "value": B64.encode(v)})
        }
        Compare::ModRevisionIs(k, r) => {
            json!({"key": B64.encode(k), "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string()})
        }
    }
}

fn op_body(o: &Op<'_>) -> Value {
    match o {
        Op::Put { key, value, lease } => json!({"request_put": put_body(key, value, *lease)}),
        Op::DeletePrefix(p) => json!({"request_delete_range": {
            "key": B64.encode(p), "range_end": B64.encode(prefix_end(p))}}),
    }
}

/// The end of the range of every key starting with `prefix` (etcd's
/// `--prefix`: the prefix with its last byte incremented).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An int64 of the gateway's JSON: a string, or a number.
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

fn revision(v: &Value, call: &'static str) -> Result<i64, EtcdError> {
    int(&v["header"]["revision"]).ok_or(EtcdError::Malformed {
        call,
        detail: v.to_string(),
    })
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    let text = |f: &str| {
        let raw = v[f].as_str().unwrap_or("");
        B64.decode(raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(EtcdError::Malformed {
                call: "kv/range",
                detail: format!("{f} is not base64 UTF-8"),
            })
    };
    Ok(Kv {
        key: text("key")?,
        value: text("value")?,
        mod_revision: int(&v["mod_revision"]).unwrap_or(0),
        lease: int(&v["lease"]).unwrap_or(0),
    })
}

/// rustls with the group's CA as the only root and the member's
/// certificate and key for client authentication.
fn client_config(t: &TlsFiles) -> Result<rustls::ClientConfig, EtcdError> {
    let tls = |what: &str, e: &dyn std::fmt::Display| EtcdError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &t.ca_pem[..]) {
        let c = c.map_err(|e| tls("caFile", &e))?;
        roots.add(c).map_err(|e| tls("caFile", &e))?;
    }
    if roots.is_empty() {
        return Err(EtcdError::Tls("caFile holds no certificate".into()));
    }
    let certs = rustls_pemfile::certs(&mut &t.cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls("certFile", &e))?;
    let key = rustls_pemfile::private_key(&mut &t.key_pem[..])
        .map_err(|e| tls("keyFile", &e))?
        .ok_or_else(|| EtcdError::Tls("keyFile holds no private key".into()))?;
    // ring, not aws-lc-rs: no cmake or C toolchain beyond cc at build time;
    // etcd's TLS needs no post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls("certFile/keyFile", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("a/b/"), b"a/b0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn gateway_int64s_are_strings_or_numbers() {
        assert_eq!(int(&json!("42")), Some(42));
        assert_eq!(int(&json!(7)), Some(7));
        assert_eq!(int(&Value::Null), None);
    }

    #[test]
    fn a_range_entry_is_decoded() {
        let v = json!({"key": B64.encode("k"), "value": B64.encode("v"), "mod_revision": "9", "lease": "3"});
        let k = kv(&v).unwrap();
        assert_eq!(
            (k.key.as_str(), k.value.as_str(), k.mod_revision, k.lease),
            ("k", "v", 9, 3)
        );
    }
}

//! Counting a client's API requests from the API server's audit log.
//!
//! The local API server writes one JSON object per line to `logs/audit.log`, for the benchmark
//! identities and the controller's ServiceAccounts only (see [`crate::flags::audit_policy`]): a
//! `RequestReceived` event for every request and a `ResponseComplete` event with the response
//! code. Requests are counted from `RequestReceived` (exactly one per request, watches
//! included); failures from `ResponseComplete` codes of 400 and above.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Verbs that change state.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// API requests of one client, by verb and by `verb resource[/subresource]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Requests by verb (`get`, `list`, `watch`, `create`, `patch`, ...).
    pub by_verb: BTreeMap<String, u64>,
    /// Requests by `verb resource` (e.g. `create pods`, `update daemonsets/status`).
    pub by_resource: BTreeMap<String, u64>,
    /// Requests answered with a code of 400 or above, by code.
    pub failed: BTreeMap<u16, u64>,
}

impl RequestCounts {
    /// All requests.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }

    /// Requests with a write verb ([`WRITE_VERBS`]).
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.by_verb
            .iter()
            .filter(|(v, _)| WRITE_VERBS.contains(&v.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        for (k, v) in &other.by_verb {
            *self.by_verb.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_resource {
            *self.by_resource.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.failed {
            *self.failed.entry(*k).or_default() += v;
        }
    }

    /// Counts one audit log line if it belongs to `user`. Lines that are not audit events are
    /// ignored.
    pub fn count_line(&mut self, line: &str, user: &str) {
        let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
            return;
        };
        if event.user.username != user {
            return;
        }
        match event.stage.as_str() {
            "RequestReceived" => {
                *self.by_verb.entry(event.verb.clone()).or_default() += 1;
                let resource = event.object_ref.map_or_else(
                    || event.request_uri.clone(),
                    |r| match r.subresource {
                        Some(sub) => format!("{}/{sub}", r.resource),
                        None => r.resource,
                    },
                );
                *self
                    .by_resource
                    .entry(format!("{} {resource}", event.verb))
                    .or_default() += 1;
            }
            "ResponseComplete" => {
                if let Some(code) = event.response_status.and_then(|s| s.code)
                    && code >= 400
                {
                    *self.failed.entry(code).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// Counts every line of `text` (see [`RequestCounts::count_line`]).
    #[must_use]
    pub fn from_text(text: &str, user: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            c.count_line(line, user);
        }
        c
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    user: AuditUser,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Debug, Deserialize)]
struct AuditUser {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<u16>,
}

/// Reads an audit log incrementally: each [`AuditReader::read_new`] counts the complete lines
/// written since the previous call.
#[derive(Debug)]
pub struct AuditReader {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl AuditReader {
    /// A reader that starts at the current end of the file (or at 0 when it does not exist
    /// yet).
    #[must_use]
    pub fn at_end(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_path_buf(),
            offset,
            partial: String::new(),
        }
    }

    /// Counts `user`'s requests in the lines written since the last call.
    pub fn read_new(&mut self, user: &str) -> Result<RequestCounts> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RequestCounts::default());
            }
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::io("seek", &self.path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &self.path, e))?;
        self.offset += bytes.len() as u64;
        let mut text = std::mem::take(&mut self.partial);
        text.push_str(&String::from_utf8_lossy(&bytes));
        // Keep an incomplete last line for the next call.
        let complete = match text.rfind('\n') {
            Some(i) => {
                self.partial = text[i + 1..].to_owned();
                &text[..=i]
            }
            None => {
                self.partial = text;
                return Ok(RequestCounts::default());
            }
        };
        Ok(RequestCounts::from_text(complete, user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"RequestReceived","requestURI":"/api/v1/namespaces/b/pods","verb":"create","user":{"username":"everynode-bench-measured","groups":["system:masters"]},"userAgent":"kube-controller-manager/v1.36.3","objectRef":{"resource":"pods","namespace":"b","apiVersion":"v1"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/b/pods","verb":"create","user":{"username":"everynode-bench-measured"},"objectRef":{"resource":"pods","namespace":"b","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"RequestReceived","requestURI":"/apis/apps/v1/namespaces/b/daemonsets/d/status","verb":"update","user":{"username":"everynode-bench-measured"},"objectRef":{"resource":"daemonsets","subresource":"status","namespace":"b","name":"d"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/b/daemonsets/d/status","verb":"update","user":{"username":"everynode-bench-measured"},"objectRef":{"resource":"daemonsets","subresource":"status"},"responseStatus":{"code":409}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"RequestReceived","requestURI":"/api/v1/pods?watch=true","verb":"watch","user":{"username":"everynode-bench-measured"},"objectRef":{"resource":"pods"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a4","stage":"RequestReceived","requestURI":"/api","verb":"get","user":{"username":"everynode-bench-measured"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a5","stage":"RequestReceived","requestURI":"/api/v1/pods","verb":"create","user":{"username":"everynode-bench-floor"},"objectRef":{"resource":"pods"}}
not json
"#;

    #[test]
    fn counts_requests_of_one_user_by_verb_and_resource() {
        let c = RequestCounts::from_text(LOG, "everynode-bench-measured");
        assert_eq!(c.total(), 4);
        assert_eq!(c.writes(), 2);
        assert_eq!(c.by_verb["create"], 1);
        assert_eq!(c.by_verb["watch"], 1);
        assert_eq!(c.by_resource["update daemonsets/status"], 1);
        assert_eq!(c.by_resource["create pods"], 1);
        assert_eq!(c.by_resource["get /api"], 1);
        assert_eq!(c.failed, BTreeMap::from([(409, 1)]));
        let floor = RequestCounts::from_text(LOG, "everynode-bench-floor");
        assert_eq!(floor.total(), 1);
        let mut sum = c.clone();
        sum.add(&floor);
        assert_eq!(sum.by_verb["create"], 2);
        assert_eq!(sum.total(), 5);
    }

    #[test]
    fn reader_counts_only_new_complete_lines() {
        let path =
            std::env::temp_dir().join(format!("everynode-audit-test-{}", std::process::id()));
        let lines: Vec<&str> = LOG.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[0])).unwrap();
        let mut r = AuditReader::at_end(&path);
        assert_eq!(r.read_new("everynode-bench-measured").unwrap().total(), 0);
        // A line written in two parts is counted once, when complete.
        let third = lines[2];
        let (a, b) = third.split_at(40);
        std::fs::write(&path, format!("{}\n{a}", lines[0])).unwrap();
        assert_eq!(r.read_new("everynode-bench-measured").unwrap().total(), 0);
        std::fs::write(&path, format!("{}\n{a}{b}\n", lines[0])).unwrap();
        let c = r.read_new("everynode-bench-measured").unwrap();
        assert_eq!(c.by_resource["update daemonsets/status"], 1);
        assert_eq!(c.total(), 1);
        std::fs::remove_file(&path).unwrap();
    }
}

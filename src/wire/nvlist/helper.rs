//! bhyve's typed view of the helper's configuration record.

use super::*;

/// bhyve's configuration for its slirp helper, from the first record.
///
/// bhyve sends the net device's configuration node (every value a string)
/// plus `vmname`. The helper reads `hostfwd` (rules separated by `;`),
/// `open` (a bhyve boolean) and `vmname`; every other key is listed in
/// [`ignored`](HelperConfig::ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelperConfig {
    /// Host forwarding rules, bhyve syntax, unparsed.
    pub hostfwd: Option<String>,
    /// The guest may reach the outside (`open`; false when absent).
    pub open: bool,
    /// The VM's name.
    pub vmname: Option<String>,
    /// Who serves TCP (ours, `tcp`): `"own"` or `"slirp"`; `None` is
    /// the helper's default. bhyve never sends it.
    pub tcp: Option<String>,
    /// caploop's own `slirp-helper` back end asked for a start-up
    /// acknowledgement ([`ACK_KEY`]); bhyve never does.
    pub ack: bool,
    /// Names of the keys the helper does not use, in wire order.
    pub ignored: Vec<String>,
}

/// The configuration key with which caploop's `slirp-helper` back end
/// asks the helper to say, in one record before any frame, whether it
/// could apply the configuration ([`ack_record`]). bhyve never sends it,
/// so bhyve never receives the record: its protocol is unchanged.
pub const ACK_KEY: &str = "caploop-ack";

/// What an acknowledgement record starts with.
const ACK_PREFIX: &[u8] = b"\0caploop-sandbox ack\0";

/// The acknowledgement record: `Ok` once the configuration is applied
/// (host forwards bound, sandbox entered), or the error that stopped the
/// helper. It cannot be taken for a frame: it starts with a NUL byte and a
/// text no Ethernet frame carries there, and it only ever comes first.
pub fn ack_record(result: Result<(), &str>) -> Vec<u8> {
    let mut r = ACK_PREFIX.to_vec();
    match result {
        Ok(()) => r.extend_from_slice(b"ok"),
        Err(e) => {
            r.extend_from_slice(b"error: ");
            r.extend_from_slice(e.as_bytes());
        }
    }
    r
}

/// Reads an acknowledgement record: `None` if `record` is not one,
/// `Some(Err(text))` for the helper's error.
pub fn parse_ack(record: &[u8]) -> Option<Result<(), String>> {
    let rest = record.strip_prefix(ACK_PREFIX)?;
    if rest == b"ok" {
        return Some(Ok(()));
    }
    let text = rest.strip_prefix(b"error: ").unwrap_or(rest);
    Some(Err(String::from_utf8_lossy(text).into_owned()))
}

/// A configuration record the helper cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The record is not a valid packed nvlist.
    #[error("{0}")]
    NvList(#[from] NvError),
    /// A known key has a value of the wrong type or form.
    #[error("configuration key {key:?}: {value} is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value, rendered briefly.
        value: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// A known key occurs more than once (a list with `NV_FLAG_NO_UNIQUE`).
    #[error("configuration key {key:?} occurs more than once")]
    Duplicate {
        /// The key.
        key: String,
    },
}

/// bhyve's boolean spellings (config.c `_bool_value`): `true`, `on`,
/// `yes` and `false`, `off`, `no` in any case, and `1`, `0`.
pub fn bhyve_bool(s: &str) -> Option<bool> {
    let is = |w: &str| s.eq_ignore_ascii_case(w);
    if is("true") || is("on") || is("yes") || s == "1" {
        Some(true)
    } else if is("false") || is("off") || is("no") || s == "0" {
        Some(false)
    } else {
        None
    }
}

impl HelperConfig {
    /// Decodes the packed configuration record.
    pub fn from_packed(record: &[u8]) -> Result<HelperConfig, ConfigError> {
        HelperConfig::from_nvlist(&NvList::unpack(record)?)
    }

    /// Reads the configuration from a decoded nvlist.
    pub fn from_nvlist(list: &NvList) -> Result<HelperConfig, ConfigError> {
        const STRING: &str = "a string";
        let mut cfg = HelperConfig::default();
        let mut seen = [false; 4];
        for (name, value) in list.pairs() {
            if list.same_name(name, ACK_KEY) {
                cfg.ack = true;
                continue;
            }
            let known = ["hostfwd", "open", "vmname", "tcp"]
                .iter()
                .position(|k| list.same_name(name, k));
            let Some(i) = known else {
                cfg.ignored.push(name.clone());
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(ConfigError::Duplicate { key: name.clone() });
            }
            let bad = |expected| ConfigError::BadValue {
                key: name.clone(),
                value: value.to_string(),
                expected,
            };
            match (i, value) {
                (0, Value::String(s)) => cfg.hostfwd = Some(s.clone()),
                (2, Value::String(s)) => cfg.vmname = Some(s.clone()),
                (3, Value::String(s)) if s == "own" || s == "slirp" => cfg.tcp = Some(s.clone()),
                (3, _) => return Err(bad("\"own\" or \"slirp\"")),
                (0 | 2, _) => return Err(bad(STRING)),
                (_, Value::Bool(b)) => cfg.open = *b,
                (_, Value::String(s)) => {
                    cfg.open = bhyve_bool(s)
                        .ok_or_else(|| bad("a boolean (true/false, on/off, yes/no, 1/0)"))?
                }
                _ => return Err(bad("a boolean (a BOOL, or a string true/false)")),
            }
        }
        Ok(cfg)
    }

    /// The nvlist bhyve would send for this configuration (values as
    /// strings, `vmname` last, ignored keys and [`ACK_KEY`] left out).
    pub fn to_nvlist(&self) -> NvList {
        let mut l = NvList::new();
        if let Some(h) = &self.hostfwd {
            l.push("hostfwd", Value::String(h.clone()));
        }
        l.push("open", Value::String(self.open.to_string()));
        if let Some(n) = &self.vmname {
            l.push("vmname", Value::String(n.clone()));
        }
        if let Some(t) = &self.tcp {
            l.push("tcp", Value::String(t.clone()));
        }
        l
    }
}

//! A back end's name, as bhyve writes it: the kind (or device) first, then
//! comma-separated options, each `key` or `key=value`.

/// Splits a back end's name at its first comma: the device (or kind) and
/// its options, each `key` or `key=value`.
pub fn split_options(name: &str) -> (&str, Vec<(&str, &str)>) {
    let mut fields = name.split(',');
    let device = fields.next().unwrap_or_default();
    let options = fields
        .filter(|f| !f.is_empty())
        .map(|f| f.split_once('=').unwrap_or((f, "")))
        .collect();
    (device, options)
}

/// The options the two slirp back ends (`slirp`, `slirp-helper`) take,
/// read the same way for both: each key at most once, `open` bare or a
/// bhyve boolean, `hostfwd` bhyve's rules (checked when the rule parser is
/// built in), `helper` only where `takes_helper`. Every mistake is one
/// [`Error::BadOption`] naming the option and what is wrong with its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlirpKeys {
    pub hostfwd: Option<String>,
    pub open: bool,
    pub vmname: Option<String>,
    pub helper: Option<String>,
    /// `tcp=own` or `tcp=slirp`.
    pub tcp: Option<String>,
}

impl SlirpKeys {
    /// Reads `name`'s options (everything after its first comma).
    pub(crate) fn parse(name: &str, takes_helper: bool) -> Result<SlirpKeys, super::Error> {
        let bad = |option: &str, reason: String| super::Error::BadOption {
            backend: name.to_owned(),
            option: option.to_owned(),
            reason,
        };
        let (_, options) = split_options(name);
        let mut out = SlirpKeys::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in options {
            if key.is_empty() {
                return Err(bad(key, format!("an option with no name: \"={value}\"")));
            }
            if seen.contains(&key) {
                return Err(bad(key, "given twice".into()));
            }
            seen.push(key);
            match key {
                "hostfwd" => {
                    #[cfg(feature = "slirp")]
                    crate::slirp::parse_rules(value).map_err(|e| bad(key, e.to_string()))?;
                    out.hostfwd = Some(value.to_owned());
                }
                "open" => {
                    out.open = match value {
                        "" => true,
                        v => crate::wire::nvlist::bhyve_bool(v).ok_or_else(|| {
                            bad(
                                key,
                                format!(
                                "{v:?} is not a boolean (true, on, yes, 1 or false, off, no, 0)"
                            ),
                            )
                        })?,
                    }
                }
                "vmname" => out.vmname = Some(value.to_owned()),
                "tcp" => match value {
                    "own" | "slirp" => out.tcp = Some(value.to_owned()),
                    v => return Err(bad(key, format!("{v:?} is neither \"own\" nor \"slirp\""))),
                },
                "helper" if takes_helper => {
                    if value.is_empty() {
                        return Err(bad(key, "an empty path".into()));
                    }
                    out.helper = Some(value.to_owned());
                }
                other => {
                    let takes = if takes_helper {
                        "helper, hostfwd, open, tcp, vmname"
                    } else {
                        "hostfwd, open, tcp, vmname"
                    };
                    return Err(bad(other, format!("unknown (this back end takes {takes})")));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_at_commas() {
        assert_eq!(split_options("tap0"), ("tap0", vec![]));
        assert_eq!(
            split_options("slirp,hostfwd=tcp::1-:2;udp::3-:4,open,,vmname=a=b"),
            (
                "slirp",
                vec![
                    ("hostfwd", "tcp::1-:2;udp::3-:4"),
                    ("open", ""),
                    ("vmname", "a=b")
                ]
            )
        );
    }
}

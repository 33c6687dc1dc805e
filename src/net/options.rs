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

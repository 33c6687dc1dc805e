//! What Landlock handles for a policy, as data. Platform-independent and
//! unit-tested; `super::super::linux` builds the ruleset.

use crate::sandbox::plan::{Mode, Policy};

/// What Landlock handles (refuses unless a rule allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRules {
    /// Every filesystem access, with no rule: no path can be opened,
    /// created, removed or executed.
    pub handle_fs: bool,
    /// TCP `bind`, with no rule.
    pub handle_bind_tcp: bool,
    /// TCP `connect`, allowed only to `connect_ports`.
    pub handle_connect_tcp: bool,
    /// Ports `connect` may reach when `handle_connect_tcp`.
    pub connect_ports: Vec<u16>,
    /// Scope abstract unix sockets and signals to the sandbox (ABI 6).
    pub scope: bool,
    /// With `scope`: signals too. Left out when the plan holds a process
    /// descriptor ([`Rights::PROCESS`](crate::Rights::PROCESS)): the
    /// helper it names was started before entry, outside the sandbox, and
    /// must still be killable; seccomp alone then limits signals (to
    /// `pidfd_send_signal` on those descriptors, and a fatal signal to
    /// the process itself).
    pub scope_signals: bool,
}

/// What Landlock handles under `policy`.
pub fn landlock_rules(policy: &Policy) -> LandlockRules {
    let open = policy.mode == Mode::Open;
    LandlockRules {
        handle_fs: true,
        handle_bind_tcp: !policy.allow_bind,
        handle_connect_tcp: !open || !policy.connect_ports.is_empty(),
        connect_ports: if open {
            policy.connect_ports.clone()
        } else {
            Vec::new()
        },
        scope: true,
        scope_signals: true,
    }
}

/// [`landlock_rules`] for a plan that does (`true`) or does not hold a
/// process descriptor.
pub fn landlock_rules_for(policy: &Policy, process_descriptors: bool) -> LandlockRules {
    LandlockRules {
        scope_signals: !process_descriptors,
        ..landlock_rules(policy)
    }
}

/// The Landlock ABI each part of [`LandlockRules`] needs: filesystem rules
/// from ABI 1, TCP bind/connect from ABI 4, signal and abstract-socket
/// scoping from ABI 6. Newer rights (named unix sockets at ABI 9, UDP at
/// ABI 10) are asked for when the kernel has them but caploop does not
/// rely on them: seccomp refuses unix and (in restricted mode) UDP sockets.
pub const FS_ABI: u32 = 1;
/// See [`FS_ABI`].
pub const TCP_ABI: u32 = 4;
/// See [`FS_ABI`].
pub const SCOPE_ABI: u32 = 6;

/// The parts of `rules` a kernel with Landlock ABI `abi` cannot enforce,
/// in words (empty: all of them are enforced).
pub fn landlock_missing(abi: u32, rules: &LandlockRules) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if rules.handle_fs && abi < FS_ABI {
        missing.push("the filesystem rules (no path may be opened)");
    }
    if (rules.handle_bind_tcp || rules.handle_connect_tcp) && abi < TCP_ABI {
        missing.push("the TCP bind/connect rules (ABI 4)");
    }
    if rules.scope && abi < SCOPE_ABI {
        missing.push("signal and abstract-socket scoping (ABI 6)");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parts_by_abi() {
        let r = landlock_rules(&Policy::restricted());
        assert_eq!(landlock_missing(0, &r).len(), 3);
        assert_eq!(
            landlock_missing(3, &r),
            vec![
                "the TCP bind/connect rules (ABI 4)",
                "signal and abstract-socket scoping (ABI 6)"
            ]
        );
        assert!(landlock_missing(6, &r).is_empty());
        assert!(landlock_missing(7, &r).is_empty());
        // Open mode with allow_bind and no port list asks nothing of TCP.
        let r = landlock_rules(&Policy {
            allow_bind: true,
            ..Policy::open()
        });
        assert_eq!(
            landlock_missing(3, &r),
            vec!["signal and abstract-socket scoping (ABI 6)"]
        );
    }

    #[test]
    fn landlock_by_policy() {
        let r = landlock_rules(&Policy::restricted());
        assert!(r.handle_fs && r.handle_bind_tcp && r.handle_connect_tcp);
        assert!(r.connect_ports.is_empty());
        let r = landlock_rules(&Policy::open());
        assert!(!r.handle_connect_tcp && r.handle_bind_tcp);
        let r = landlock_rules(&Policy {
            connect_ports: vec![53, 443],
            allow_bind: true,
            ..Policy::open()
        });
        assert!(r.handle_connect_tcp && !r.handle_bind_tcp);
        assert_eq!(r.connect_ports, vec![53, 443]);
        // Ports are ignored in restricted mode: nothing may connect.
        let r = landlock_rules(&Policy {
            connect_ports: vec![53],
            ..Policy::restricted()
        });
        assert!(r.handle_connect_tcp && r.connect_ports.is_empty());
    }
}

//! The seccomp filter's conditions as data: an argument compared with a
//! value, groups of them ORed, and the whole filter evaluated as the
//! kernel would (for tests and for explaining a refusal).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use super::syscalls::Sys;

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

/// One argument check. `wide` compares all 64 bits (pointers); otherwise
/// the low 32 bits (descriptors, commands, flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// Comparison.
    pub cmp: Cmp,
    /// Value compared with.
    pub value: u64,
    /// Compare 64 bits rather than 32.
    pub wide: bool,
}

impl Cond {
    pub(crate) fn dword(arg: u8, cmp: Cmp, value: u64) -> Cond {
        Cond {
            arg,
            cmp,
            value,
            wide: false,
        }
    }

    /// `fd` argument `arg` is not `fd`.
    pub fn fd_ne(arg: u8, fd: RawFd) -> Cond {
        Cond::dword(arg, Cmp::Ne, fd as u32 as u64)
    }

    /// `fd` argument `arg` is `fd`.
    pub fn fd_eq(arg: u8, fd: RawFd) -> Cond {
        Cond::dword(arg, Cmp::Eq, fd as u32 as u64)
    }
}

/// When an allowed syscall matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysRule {
    /// Always.
    Any,
    /// When every check of at least one group holds (OR of ANDs). Never
    /// empty, and no group is empty.
    AnyOf(Vec<Vec<Cond>>),
}

/// The seccomp filter as data: the allowed syscalls, each with its
/// argument checks. Everything else fails with `EPERM`, but the syscalls in
/// `enosys`, which fail with `ENOSYS` (so a library falls back to an older
/// call that can be checked).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeccompRules {
    /// Allowed syscalls.
    pub allow: BTreeMap<Sys, SysRule>,
    /// Refused as if the kernel lacked them (`clone3`, whose flags sit in
    /// memory seccomp cannot read: glibc then uses `clone`).
    pub enosys: Vec<Sys>,
}

impl SeccompRules {
    /// Whether `sys` is allowed at all (for some arguments).
    pub fn allows(&self, sys: Sys) -> bool {
        self.allow.contains_key(&sys)
    }

    /// Evaluates the filter for a call, as the kernel would: whether
    /// `sys(args)` is allowed. For tests and for explaining a refusal.
    pub fn permits(&self, sys: Sys, args: [u64; 6]) -> bool {
        match self.allow.get(&sys) {
            None => false,
            Some(SysRule::Any) => true,
            Some(SysRule::AnyOf(groups)) => groups.iter().any(|g| {
                g.iter().all(|c| {
                    let mut a = args[c.arg as usize];
                    let mut v = c.value;
                    if !c.wide {
                        a &= 0xffff_ffff;
                        v &= 0xffff_ffff;
                    }
                    match c.cmp {
                        Cmp::Eq => a == v,
                        Cmp::Ne => a != v,
                        Cmp::MaskedEq(m) => a & m == v & m,
                    }
                })
            }),
        }
    }
}

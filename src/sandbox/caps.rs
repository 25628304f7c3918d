//! Capabilities a script must never hold (SPEC.md §8).
//!
//! The policy names capabilities to remove from the **bounding** set. For a
//! uid-0 process that is what matters: at `execve` root's new permitted and
//! effective sets are the bounding set (plus inheritable ∩ file-inheritable,
//! plus ambient — capabilities(7)), so the exec that follows the drop is what
//! takes them away. The same capabilities are therefore also lowered in the
//! inheritable set (which also lowers them in the ambient set) and explicitly
//! in the ambient set, so neither path can carry them across the exec.
//!
//! Names are resolved with the `caps` crate when the policy is loaded;
//! numbers and masks are computed when preparing; applying is raw `prctl` and
//! `capget`/`capset` with no allocation.

use ::caps::Capability;
use nix::errno::Errno;

use super::policy::CapabilityDrop;
use super::{ApplyError, SandboxStep};

/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): 64-bit sets as two
/// 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The drops of a policy, resolved to numbers for this kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct PreparedCapabilityDrop {
    numbers: Vec<u8>,
    /// Bits to keep in the inheritable set (v3 layout: word 0 = caps 0..31).
    inheritable_keep: [u32; 2],
    unsupported: Vec<Capability>,
}

impl PreparedCapabilityDrop {
    pub(crate) fn new(drops: &[CapabilityDrop]) -> PreparedCapabilityDrop {
        // A capability newer than the running kernel cannot be granted by it:
        // PR_CAPBSET_DROP would fail with EINVAL, so it is skipped (and
        // reported) rather than failing every run on an older kernel.
        let supported = ::caps::runtime::thread_all_supported();
        let mut prepared = PreparedCapabilityDrop {
            inheritable_keep: [u32::MAX; 2],
            ..Default::default()
        };
        for drop in drops {
            if !supported.contains(&drop.capability) {
                prepared.unsupported.push(drop.capability);
                continue;
            }
            let n = drop.capability.index();
            if prepared.numbers.contains(&n) {
                continue;
            }
            prepared.numbers.push(n);
            prepared.inheritable_keep[usize::from(n / 32)] &= !(1u32 << (n % 32));
        }
        prepared
    }

    pub(crate) fn unsupported(&self) -> &[Capability] {
        &self.unsupported
    }

    pub(crate) fn apply(&self) -> Result<(), ApplyError> {
        // INVARIANT: no allocation — runs between fork and exec.
        if self.numbers.is_empty() {
            return Ok(());
        }
        for &cap in &self.numbers {
            // SAFETY: PR_CAPBSET_DROP takes the capability number as an
            // integer; no memory is passed (man 2 prctl).
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    libc::c_ulong::from(cap),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc != 0 {
                return Err(ApplyError {
                    step: SandboxStep::BoundingDrop(cap),
                    errno: Errno::last(),
                });
            }
        }
        self.lower_inheritable()?;
        for &cap in &self.numbers {
            // SAFETY: PR_CAP_AMBIENT_LOWER takes the capability number as an
            // integer; arg4 and arg5 must be 0 (man 2 prctl).
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
                    libc::c_ulong::from(cap),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc != 0 {
                return Err(ApplyError {
                    step: SandboxStep::AmbientLower(cap),
                    errno: Errno::last(),
                });
            }
        }
        Ok(())
    }

    /// `capget` then `capset` with the dropped bits cleared from the
    /// inheritable set; effective and permitted are written back unchanged.
    /// Lowering a capability is always allowed.
    fn lower_inheritable(&self) -> Result<(), ApplyError> {
        let fail = || ApplyError {
            step: SandboxStep::Inheritable,
            errno: Errno::last(),
        };
        let mut header = CapUserHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapUserData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: header and data are valid, writable, repr(C) and sized for
        // _LINUX_CAPABILITY_VERSION_3 (two data structs), as capget(2) expects.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapUserHeader,
                data.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(fail());
        }
        for (word, keep) in data.iter_mut().zip(self.inheritable_keep) {
            word.inheritable &= keep;
        }
        // SAFETY: as above; capset(2) only reads the two structs.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapUserHeader,
                data.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(fail());
        }
        Ok(())
    }
}

/// All capability names the `caps` crate knows, sorted by number.
pub fn known_capabilities() -> Vec<Capability> {
    let mut all: Vec<Capability> = ::caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all
}

/// Names of the capabilities set in a 64-bit mask (as in `/proc/PID/status`),
/// sorted by number. Bits the `caps` crate has no name for appear as `cap_N`.
pub fn names_from_mask(mask: u64) -> Vec<String> {
    let known = known_capabilities();
    (0u8..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| match known.iter().find(|c| c.index() == bit) {
            Some(c) => c.to_string(),
            None => format!("cap_{bit}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_names() {
        // CAP_CHOWN (0), CAP_SYS_ADMIN (21), an unnamed bit 63
        let names = names_from_mask(1 | (1 << 21) | (1 << 63));
        assert_eq!(names, vec!["CAP_CHOWN", "CAP_SYS_ADMIN", "cap_63"]);
    }

    #[test]
    fn inheritable_mask_clears_dropped_bits() {
        let drops = vec![
            CapabilityDrop {
                capability: Capability::CAP_SYS_MODULE, // 16
                comment: "x".into(),
            },
            CapabilityDrop {
                capability: Capability::CAP_BPF, // 39
                comment: "x".into(),
            },
        ];
        let p = PreparedCapabilityDrop::new(&drops);
        if p.unsupported.is_empty() {
            assert_eq!(p.inheritable_keep[0], !(1u32 << 16));
            assert_eq!(p.inheritable_keep[1], !(1u32 << 7));
        }
    }
}

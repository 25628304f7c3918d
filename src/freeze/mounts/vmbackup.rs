//! The extension's `vmbackup.conf`, an INI file read the way its python
//! ConfigParser reads it, for one key: `MountsToSkip` (SPEC.md §6.1).

use std::path::{Path, PathBuf};

use super::table::normalize;

/// The Azure extension's own settings; its `MountsToSkip` is honoured (§6.1).
pub const VMBACKUP_CONF_PATH: &str = "/etc/azure/vmbackup.conf";

/// `MountsToSkip` of section `[SnapshotThread]` in `vmbackup.conf`, read the
/// way the extension's python ConfigParser reads it: `=` or `:` separates
/// key and value, keys are case-insensitive, section names are not, lines
/// starting with `#` or `;` are comments, indented lines continue a value.
/// The value is a comma-separated list of mount points. Missing section or
/// key: nothing is skipped.
pub fn parse_mounts_to_skip(ini_text: &str) -> Vec<PathBuf> {
    let mut in_section = false;
    let mut value: Option<String> = None;
    // The last key line read was MountsToSkip: indented lines extend it.
    let mut continuing = false;
    for raw in ini_text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if continuing && line.len() != trimmed.len() {
            if let Some(v) = value.as_mut() {
                v.push('\n');
                v.push_str(trimmed);
            }
            continue;
        }
        continuing = false;
        if let Some(header) = trimmed.strip_prefix('[') {
            if let Some(end) = header.rfind(']') {
                in_section = &header[..end] == "SnapshotThread";
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            continue;
        };
        if trimmed[..split].trim().eq_ignore_ascii_case("MountsToSkip") {
            value = Some(trimmed[split + 1..].trim().to_string());
            continuing = true;
        }
    }
    value
        .map(|v| {
            v.split([',', '\n'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| normalize(Path::new(p)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_to_skip_follows_configparser() {
        let conf = "\
; comment
[Other]
MountsToSkip = /other
[SnapshotThread]
# comment
mountstoskip: /a/ ,/b,, /c d
   /e,
";
        assert_eq!(
            parse_mounts_to_skip(conf),
            ["/a", "/b", "/c d", "/e"].map(PathBuf::from)
        );
        // The last occurrence wins, like ConfigParser with strict=False.
        assert_eq!(
            parse_mounts_to_skip("[SnapshotThread]\nMountsToSkip=/x\nMountsToSkip=/y\n"),
            [PathBuf::from("/y")]
        );
        assert!(parse_mounts_to_skip("[SnapshotThread]\nfsfreeze: True\n").is_empty());
        assert!(parse_mounts_to_skip("[Other]\nMountsToSkip = /x\n").is_empty());
        // Section names are case-sensitive in ConfigParser.
        assert!(parse_mounts_to_skip("[snapshotthread]\nMountsToSkip = /x\n").is_empty());
        assert!(parse_mounts_to_skip("[SnapshotThread]\nMountsToSkip =\n").is_empty());
        assert!(parse_mounts_to_skip("").is_empty());
    }
}

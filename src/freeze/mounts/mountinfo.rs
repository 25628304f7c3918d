//! `/proc/self/mountinfo` as proc(5) describes it: one [`MountInfo`] per
//! line, octal escapes decoded, any byte string a mount point.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use thiserror::Error;

/// One line of `/proc/self/mountinfo` (proc(5)), with octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem this mount shows (`/` unless it is a
    /// bind mount of a subdirectory or a btrfs subvolume).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// The per-mount options contain `ro`.
    pub read_only: bool,
    /// Propagation tags such as `shared:1`, `master:2`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
    /// The superblock options contain `ro`.
    pub super_read_only: bool,
}

impl MountInfo {
    /// The superblock's device as `major:minor`, the way the status JSON and
    /// `/sys/dev/block` spell it.
    pub fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    pub(super) fn superblock(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// Mountinfo text the parser does not understand.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MountinfoError {
    #[error("mountinfo line {line} is malformed: {what}")]
    Malformed { line: usize, what: String },
}

/// Parses `/proc/self/mountinfo` text. Blank lines are ignored; any other
/// line that does not have the proc(5) shape is an error naming its number.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, MountinfoError> {
    parse_mountinfo_bytes(text.as_bytes())
}

/// [`parse_mountinfo`] on raw bytes: the kernel escapes only space, tab,
/// newline and backslash, so a mount point may be any other byte string.
pub fn parse_mountinfo_bytes(bytes: &[u8]) -> Result<Vec<MountInfo>, MountinfoError> {
    let mut mounts = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        mounts.push(parse_line(line, index + 1)?);
    }
    Ok(mounts)
}

fn parse_line(line: &[u8], number: usize) -> Result<MountInfo, MountinfoError> {
    let malformed = |what: String| MountinfoError::Malformed { line: number, what };
    // Single spaces separate fields; an empty source shows as an empty field.
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 6 {
        return Err(malformed(format!(
            "{} fields before the separator, expected at least 6",
            fields.len()
        )));
    }
    // The first six fields are never "-" (the mount point is absolute, a
    // root never a bare "-"), so the separator is searched after them.
    let separator = fields[6..]
        .iter()
        .position(|f| *f == b"-")
        .map(|p| p + 6)
        .ok_or_else(|| malformed("no \" - \" separator before the filesystem type".into()))?;
    if fields.len() < separator + 4 {
        return Err(malformed(
            "expected filesystem type, source and superblock options after \" - \"".into(),
        ));
    }
    let number_field = |name: &str, field: &[u8]| -> Result<u32, MountinfoError> {
        std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                malformed(format!(
                    "{name} {:?} is not a number",
                    String::from_utf8_lossy(field)
                ))
            })
    };
    let mount_id = number_field("mount id", fields[0])?;
    let parent_id = number_field("parent id", fields[1])?;
    let device = fields[2];
    let colon = device
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| malformed("device is not major:minor".into()))?;
    let major = number_field("major", &device[..colon])?;
    let minor = number_field("minor", &device[colon + 1..])?;
    let root = unescape_path(fields[3]);
    let mount_point = unescape_path(fields[4]);
    // The root is the mounted dentry's path within its filesystem; for a
    // pseudo filesystem it is the dentry's name instead (`ip netns add`
    // binds nsfs, whose root reads `net:[4026532195]`).
    if !mount_point.is_absolute() {
        return Err(malformed("the mount point must be an absolute path".into()));
    }
    let mount_options = unescape_string(fields[5]);
    let optional_fields = fields[6..separator]
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| unescape_string(f))
        .collect();
    let fs_type = unescape_string(fields[separator + 1]);
    if fs_type.is_empty() {
        return Err(malformed("empty filesystem type".into()));
    }
    let source = unescape_string(fields[separator + 2]);
    let super_options = unescape_string(fields[separator + 3]);
    Ok(MountInfo {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        read_only: has_option(&mount_options, "ro"),
        mount_options,
        optional_fields,
        fs_type,
        source,
        super_read_only: has_option(&super_options, "ro"),
        super_options,
    })
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

// The kernel writes space, tab, newline and backslash as \ooo (seq_file's
// mangle); anything else after a backslash is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits[0] <= b'3' && digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits.iter().fold(0u8, |acc, d| acc * 8 + (d - b'0'));
                    // INVARIANT: first digit <= 3, so the value fits a byte.
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn unescape_path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn unescape_string(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn decodes_octal_escapes_in_paths_and_source() {
        let text = "36 35 98:0 /sub\\134dir /mnt/a\\040b\\011c\\012d rw,noatime master:1 shared:2 - ext3 /dev/my\\040disk rw,errors=continue\n";
        let m = &parse_mountinfo(text).unwrap()[0];
        assert_eq!((m.mount_id, m.parent_id, m.major, m.minor), (36, 35, 98, 0));
        assert_eq!(m.root, Path::new("/sub\\dir"));
        assert_eq!(m.mount_point, Path::new("/mnt/a b\tc\nd"));
        assert_eq!(m.source, "/dev/my disk");
        assert_eq!(m.optional_fields, ["master:1", "shared:2"]);
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert!(!m.read_only && !m.super_read_only);
        assert_eq!(m.device(), "98:0");
    }

    #[test]
    fn keeps_what_is_not_an_octal_escape() {
        assert_eq!(unescape(b"a\\999b"), b"a\\999b");
        assert_eq!(unescape(b"a\\400"), b"a\\400");
        assert_eq!(unescape(b"end\\04"), b"end\\04");
        assert_eq!(unescape(b"\\377\\000"), [0xff, 0]);
    }

    #[test]
    fn non_utf8_mount_points_survive() {
        let line = b"1 0 8:1 / /caf\xe9 rw - ext4 /dev/sda1 rw\n";
        let m = &parse_mountinfo_bytes(line).unwrap()[0];
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/caf\xe9");
    }

    #[test]
    fn read_only_comes_from_mount_and_superblock_options() {
        let text = "1 0 8:1 / / ro,relatime - ext4 /dev/sda1 rw\n2 1 8:2 / /b rw,relatime - ext4 /dev/sda2 ro,data=ordered\n";
        let m = parse_mountinfo(text).unwrap();
        assert!(m[0].read_only && !m[0].super_read_only);
        assert!(!m[1].read_only && m[1].super_read_only);
    }

    #[test]
    fn empty_source_and_no_optional_fields() {
        let m = &parse_mountinfo("5 1 0:40 / /x rw - tmpfs  rw\n").unwrap()[0];
        assert_eq!(m.source, "");
        assert!(m.optional_fields.is_empty());
    }

    /// `ip netns add` leaves an nsfs bind whose root is the namespace's
    /// name, not a path: one such line must not make the table unreadable.
    #[test]
    fn a_pseudo_filesystem_root_that_is_not_a_path_is_read() {
        let text = "200 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    201 200 0:4 net:[4026532195] /run/netns/ns1 rw shared:2 - nsfs nsfs rw\n";
        let mounts = parse_mountinfo(text).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].root, std::path::Path::new("net:[4026532195]"));
        assert_eq!(
            mounts[1].mount_point,
            std::path::Path::new("/run/netns/ns1")
        );
        assert_eq!(mounts[1].fs_type, "nsfs");
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let good = "1 0 8:1 / / rw - ext4 /dev/sda1 rw";
        let cases = [
            ("1 0 8:1 / / rw ext4 /dev/sda1 rw", "no \" - \" separator"),
            ("1 0 8:1 / / rw - ext4 /dev/sda1", "after \" - \""),
            (
                "x 0 8:1 / / rw - ext4 /dev/sda1 rw",
                "mount id \"x\" is not a number",
            ),
            ("1 0 8-1 / / rw - ext4 /dev/sda1 rw", "major:minor"),
            (
                "1 0 8:y / / rw - ext4 /dev/sda1 rw",
                "minor \"y\" is not a number",
            ),
            ("1 0 8:1 / rel rw - ext4 /dev/sda1 rw", "absolute"),
            ("1 0 8:1", "fields before the separator"),
        ];
        for (bad, what) in cases {
            // A blank line still counts: the number is the file's line.
            let text = format!("{good}\n\n{bad}\n");
            let err = parse_mountinfo(&text).unwrap_err();
            let MountinfoError::Malformed { line, what: got } = &err;
            assert_eq!(*line, 3, "{bad}");
            assert!(got.contains(what), "{bad}: {got}");
            assert!(err
                .to_string()
                .starts_with("mountinfo line 3 is malformed: "));
        }
    }
}

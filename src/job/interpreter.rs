//! What runs as root before a script's own bytes (SPEC.md §4): its
//! interpreter. A root-owned 0700 script, pinned or not, whose `#!` names a
//! program in a directory the application's user owns runs that user's
//! file as uid 0; so the interpreter goes through the script's own checks
//! (integrity.rs: root-owned, not group- or world-writable, every directory
//! above it root-owned and not writable by others, as written and with
//! links resolved), in `check` and before every run:
//!
//! - the `#!` program, at every level: an interpreter that is itself a `#!`
//!   script has its own interpreter checked, up to the kernel's depth;
//! - `/bin/sh`, for a script without the owner execute bit (or text
//!   without `#!`), which the launch runs as `/bin/sh PATH` (launch.rs);
//! - for `#!/usr/bin/env NAME`, the file NAME resolves to on the scripts'
//!   PATH ([`SCRIPT_PATH`], the one every script gets), and every PATH
//!   directory searched before it: a `NAME` put there would run instead.
//!
//! An ELF script needs no interpreter (its dynamic loader and libraries are
//! the system's, as for any binary). A pin covers the script's bytes, not
//! its interpreter, which is checked all the same.
//!
//! The `#!` line is read as the kernel reads it (fs/binfmt_script.c), so the
//! check and the exec agree: only the first [`BINPRM_BUF_SIZE`] bytes; the
//! line ends at `\n` only (a `\r` of a CRLF file is part of the name); blanks
//! after `#!` are skipped; the interpreter ends at the first space, tab or
//! NUL; everything after the following blanks, to the line's end less its
//! trailing blanks, is one argument (up to a NUL); an interpreter name that
//! does not end inside the buffer, or no name at all, is refused (ENOEXEC).
//!
//! `env`'s argument is what the kernel passes: one string. `NAME` is looked
//! up on PATH as `execvp` does (the first directory holding an executable
//! regular file of that name); `-S NAME ARGS…` (`env -S`, coreutils 8.30+)
//! is split on blanks and its first word is `NAME`. Every other form — env
//! options, `VAR=value` (which could change `PATH`), quotes, escapes or `$`
//! in `NAME` — cannot be resolved before running and is refused; the
//! message says to name the interpreter by its absolute path.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::integrity::{self, CheckedFile, CheckedIdentity, TrustError};
use crate::sandbox::env::SCRIPT_PATH;

/// What the kernel reads of a file to decide how to run it (`BINPRM_BUF_SIZE`
/// since Linux 5.1); a `#!` line is parsed within it.
pub const BINPRM_BUF_SIZE: usize = 256;

/// `#!` files the kernel follows in one `execve`: the script and four
/// interpreters that are themselves scripts; one more is ELOOP (measured on
/// Linux 6.x: fs/exec.c stops at a depth above 5).
pub const MAX_SHEBANG_LEVELS: usize = 5;

/// Programs one script may go through, `env` hops included: a `#!/usr/bin/env`
/// chain that names itself would otherwise exec forever.
const MAX_PROGRAMS: usize = 16;

/// The shell that runs a script without the owner execute bit, as the
/// extension does (and text without `#!`).
pub const SHELL: &str = "/bin/sh";

/// A `#!` line as the kernel reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shebang {
    pub interpreter: PathBuf,
    /// The optional single argument: everything after the interpreter's
    /// name and the blanks that follow it, less trailing blanks.
    pub arg: Option<OsString>,
}

/// A `#!` line the kernel refuses with ENOEXEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadShebang {
    #[error("names no interpreter")]
    NoInterpreter,
    #[error("has an interpreter path that does not end within the kernel's {BINPRM_BUF_SIZE}-byte limit")]
    Truncated,
}

fn blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The `#!` line of `content`, parsed as fs/binfmt_script.c does; `None`
/// when it does not start with `#!`.
pub fn parse_shebang(content: &[u8]) -> Option<Result<Shebang, BadShebang>> {
    if !content.starts_with(b"#!") {
        return None;
    }
    // The kernel's buffer: the first BINPRM_BUF_SIZE bytes, NUL-padded.
    let mut buf = [0u8; BINPRM_BUF_SIZE];
    let n = content.len().min(BINPRM_BUF_SIZE);
    buf[..n].copy_from_slice(&content[..n]);
    let last = BINPRM_BUF_SIZE - 1;
    let mut end = match buf.iter().position(|b| *b == b'\n') {
        Some(i) => i,
        None => {
            // No newline: the name must still end (blank or NUL) in the
            // buffer, else it may be truncated.
            let Some(start) = (2..=last).find(|i| !blank(buf[*i])) else {
                return Some(Err(BadShebang::NoInterpreter));
            };
            if !(start..=last).any(|i| blank(buf[i]) || buf[i] == 0) {
                return Some(Err(BadShebang::Truncated));
            }
            last
        }
    };
    while end > 2 && blank(buf[end - 1]) {
        end -= 1;
    }
    let Some(name) = (2..end).find(|i| !blank(buf[*i])) else {
        return Some(Err(BadShebang::NoInterpreter));
    };
    let sep = (name..end).find(|i| blank(buf[*i]) || buf[*i] == 0);
    let name_end = sep.unwrap_or(end);
    if name_end == name {
        // "#!\0…": the kernel looks up an empty name (ENOENT).
        return Some(Err(BadShebang::NoInterpreter));
    }
    let arg = match sep {
        Some(sep) if buf[sep] != 0 => (sep..end).find(|i| !blank(buf[*i])).map(|a| {
            let raw = &buf[a..end];
            let raw = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
            OsStr::from_bytes(raw).to_os_string()
        }),
        _ => None,
    };
    Some(Ok(Shebang {
        interpreter: PathBuf::from(OsStr::from_bytes(&buf[name..name_end])),
        arg,
    }))
}

/// Whether `content` is an ELF binary.
pub fn is_elf(content: &[u8]) -> bool {
    content.starts_with(b"\x7fELF")
}

/// How a checked script's bytes start running (launch.rs executes exactly
/// this; [`check`] checks exactly this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// An ELF binary with the owner execute bit: the kernel runs it.
    Binary,
    /// An owner-executable `#!` script: its interpreter runs it.
    Shebang(Shebang),
    /// `/bin/sh PATH`: no owner execute bit, or executable text without
    /// `#!` (what a shell does on ENOEXEC).
    Shell,
}

/// How a script with these bytes and this mode starts.
pub fn start(owner_executable: bool, content: &[u8]) -> Result<Start, BadShebang> {
    if !owner_executable {
        return Ok(Start::Shell);
    }
    if is_elf(content) {
        return Ok(Start::Binary);
    }
    match parse_shebang(content) {
        None => Ok(Start::Shell),
        Some(line) => line.map(Start::Shebang),
    }
}

/// Who names an interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedBy {
    /// The `#!` line of this file (the script, or an interpreter of it).
    Shebang(PathBuf),
    /// The launch: a script without the owner execute bit, or text without
    /// `#!`, runs as `/bin/sh PATH`.
    Shell,
    /// `env` looks this name up on the scripts' PATH.
    Env(OsString),
}

impl std::fmt::Display for NamedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedBy::Shebang(file) => write!(f, "#! line of {}", file.display()),
            NamedBy::Shell => {
                f.write_str("it runs scripts without the owner execute bit or without #!")
            }
            NamedBy::Env(name) => write!(
                f,
                "env runs {} from the scripts' PATH",
                name.to_string_lossy()
            ),
        }
    }
}

/// An interpreter that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// As named: by a `#!` line, the launch, or where env finds it.
    pub path: PathBuf,
    /// With every symbolic link resolved.
    pub resolved: PathBuf,
    pub named_by: NamedBy,
    /// For a program env finds: the PATH directories searched before its
    /// own, each checked (a program of that name there would run instead).
    pub shadowing: Vec<PathBuf>,
}

/// Why a script's interpreter may not run.
#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    #[error("its interpreter {} ({named_by}): {source}", path.display())]
    Untrusted {
        path: PathBuf,
        named_by: NamedBy,
        #[source]
        source: Box<TrustError>,
    },
    #[error("its interpreter {}, which env runs for {} ({named_by}): PATH directory {} is searched first, and a {} put there would run instead: {source}", found.display(), name.to_string_lossy(), dir.display(), name.to_string_lossy())]
    Shadow {
        dir: PathBuf,
        found: PathBuf,
        name: OsString,
        named_by: NamedBy,
        #[source]
        source: Box<TrustError>,
    },
    #[error("its interpreter: env finds no executable {name:?} on the scripts' PATH ({SCRIPT_PATH}){}", if name.contains([' ', '\t']) { "; the kernel passes everything after the interpreter as one argument (use #!/usr/bin/env -S to split it)" } else { "" })]
    NotOnPath { name: String },
    #[error("its interpreter {path:?} ({named_by}) does not exist: the #! line ends in \\r (CRLF line ends, as Windows editors write them), which the kernel reads as part of the name; convert the file to LF line ends (dos2unix)")]
    CrLf { path: PathBuf, named_by: NamedBy },
    #[error("{}: its #! line {why}; the kernel would refuse to run it (ENOEXEC)", file.display())]
    BadLine { file: PathBuf, why: BadShebang },
    #[error("its interpreter {} ({named_by}) is neither an ELF binary nor a #! script; the kernel cannot run it (ENOEXEC)", path.display())]
    NotAProgram { path: PathBuf, named_by: NamedBy },
    #[error("its interpreter {} ({named_by}) is a #! script nested deeper than the kernel follows ({MAX_SHEBANG_LEVELS} #! files in one exec; ELOOP)", path.display())]
    TooDeep { path: PathBuf, named_by: NamedBy },
    #[error("its interpreters do not end after {MAX_PROGRAMS} programs (a #!/usr/bin/env loop?), at {}", path.display())]
    Endless { path: PathBuf },
    #[error("{}: its #! line runs env with {arg:?}, {why}, which quiesce cannot resolve before running it; name the interpreter by its absolute path (or use env NAME, env -S NAME ARGS)", file.display())]
    EnvForm {
        file: PathBuf,
        arg: String,
        why: &'static str,
    },
}

impl InterpreterError {
    /// Whether this is "nothing the kernel could run" (the script's
    /// not-found row, 302/303), else a program someone other than root
    /// could change or quiesce cannot verify (the permission row, 306/307).
    pub fn is_not_found(&self) -> bool {
        match self {
            InterpreterError::Untrusted { source, .. } => source.is_not_found(),
            InterpreterError::Shadow { .. } | InterpreterError::EnvForm { .. } => false,
            _ => true,
        }
    }

    /// Whether the check ran out of file descriptors (then nothing is known).
    pub fn is_out_of_descriptors(&self) -> bool {
        match self {
            InterpreterError::Untrusted { source, .. }
            | InterpreterError::Shadow { source, .. } => source.is_out_of_descriptors(),
            _ => false,
        }
    }
}

/// One program still to check.
struct Step {
    path: PathBuf,
    named_by: NamedBy,
    /// The `#!` argument that came with it (env's NAME, when it is env).
    arg: Option<OsString>,
    /// `#!` files already in this `execve` (the kernel's depth).
    levels: usize,
    shadowing: Vec<PathBuf>,
}

/// Checks every program that runs as root before `script`'s own bytes,
/// returning them in the order they run (none for an ELF binary).
pub fn check(
    script: &CheckedIdentity,
    content: &[u8],
) -> Result<Vec<Interpreter>, InterpreterError> {
    let first = match start(script.owner_executable(), content) {
        Err(why) => {
            return Err(InterpreterError::BadLine {
                file: script.path.clone(),
                why,
            })
        }
        Ok(Start::Binary) => return Ok(Vec::new()),
        Ok(Start::Shell) => Step {
            path: SHELL.into(),
            named_by: NamedBy::Shell,
            arg: None,
            levels: 0,
            shadowing: Vec::new(),
        },
        Ok(Start::Shebang(line)) => Step {
            path: line.interpreter,
            named_by: NamedBy::Shebang(script.path.clone()),
            arg: line.arg,
            levels: 1,
            shadowing: Vec::new(),
        },
    };
    let mut out: Vec<Interpreter> = Vec::new();
    let mut next = Some(first);
    while let Some(step) = next.take() {
        if out.len() >= MAX_PROGRAMS {
            return Err(InterpreterError::Endless { path: step.path });
        }
        let untrusted = |source| match source {
            TrustError::Missing(_) if step.path.as_os_str().as_bytes().contains(&b'\r') => {
                InterpreterError::CrLf {
                    path: step.path.clone(),
                    named_by: step.named_by.clone(),
                }
            }
            source => InterpreterError::Untrusted {
                path: step.path.clone(),
                named_by: step.named_by.clone(),
                source: Box::new(source),
            },
        };
        let file = CheckedFile::open_program(&step.path).map_err(untrusted)?;
        let head = file.read_head(BINPRM_BUF_SIZE).map_err(untrusted)?;
        let resolved = file.into_identity().path;
        next = after(&step, &resolved, &head)?;
        out.push(Interpreter {
            path: step.path,
            resolved,
            named_by: step.named_by,
            shadowing: step.shadowing,
        });
    }
    Ok(out)
}

/// What runs after the checked program `step` (its bytes start with
/// `head`): its own interpreter when it is a `#!` script, what env finds
/// when it is env, else nothing.
fn after(step: &Step, resolved: &Path, head: &[u8]) -> Result<Option<Step>, InterpreterError> {
    if let Some(line) = parse_shebang(head) {
        let line = line.map_err(|why| InterpreterError::BadLine {
            file: step.path.clone(),
            why,
        })?;
        if step.levels + 1 > MAX_SHEBANG_LEVELS {
            return Err(InterpreterError::TooDeep {
                path: step.path.clone(),
                named_by: step.named_by.clone(),
            });
        }
        return Ok(Some(Step {
            path: line.interpreter,
            named_by: NamedBy::Shebang(step.path.clone()),
            arg: line.arg,
            levels: step.levels + 1,
            shadowing: Vec::new(),
        }));
    }
    if !is_elf(head) {
        return Err(InterpreterError::NotAProgram {
            path: step.path.clone(),
            named_by: step.named_by.clone(),
        });
    }
    let is_env = [step.path.as_path(), resolved]
        .iter()
        .any(|p| p.file_name() == Some(OsStr::new("env")));
    if !is_env {
        return Ok(None);
    }
    let NamedBy::Shebang(line_of) = &step.named_by else {
        // env reached without a #! argument: through /bin/sh or another env.
        return Err(InterpreterError::EnvForm {
            file: step.path.clone(),
            arg: String::new(),
            why: "reached without a #! line of its own",
        });
    };
    let name = env_program(line_of, step.arg.as_deref())?;
    let (found, shadowing) = on_path(&name, &step.named_by)?;
    Ok(Some(Step {
        path: found,
        named_by: NamedBy::Env(name),
        arg: None,
        levels: 0,
        shadowing,
    }))
}

/// The program `#!ENV ARG` runs: `NAME`, or the first word of `-S NAME
/// ARGS…`; every other form is refused (see the module docs).
fn env_program(line_of: &Path, arg: Option<&OsStr>) -> Result<OsString, InterpreterError> {
    let refuse = |why| InterpreterError::EnvForm {
        file: line_of.to_path_buf(),
        arg: arg.map_or(String::new(), |a| a.to_string_lossy().into_owned()),
        why,
    };
    let Some(arg) = arg else {
        return Err(refuse("no program name (env would run the script itself)"));
    };
    let bytes = arg.as_bytes();
    let name: &[u8] = if let Some(split) = bytes.strip_prefix(b"-S") {
        let mut words = split.split(|b| blank(*b)).filter(|w| !w.is_empty());
        words
            .next()
            .ok_or_else(|| refuse("-S with no program name"))?
    } else {
        bytes
    };
    if name.is_empty() {
        return Err(refuse("no program name (env would run the script itself)"));
    }
    if name.starts_with(b"-") {
        return Err(refuse("an env option other than -S"));
    }
    if name.contains(&b'=') {
        return Err(refuse("a VAR=value assignment (it could change PATH)"));
    }
    if name
        .iter()
        .any(|b| matches!(b, b'\\' | b'"' | b'\'' | b'$' | b'#'))
    {
        return Err(refuse("quotes, escapes, $ or # in the program name"));
    }
    Ok(OsStr::from_bytes(name).to_os_string())
}

/// Where env (`execvp`) finds `name`, and the PATH directories searched
/// before it, each checked: only root may be able to put a `name` there.
fn on_path(name: &OsStr, env: &NamedBy) -> Result<(PathBuf, Vec<PathBuf>), InterpreterError> {
    if name.as_bytes().contains(&b'/') {
        // execvp runs a name with a slash as it is, with no PATH search.
        return Ok((PathBuf::from(name), Vec::new()));
    }
    let mut before = Vec::new();
    for dir in SCRIPT_PATH.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        // execvp goes on past what it cannot execute (ENOENT, EACCES).
        let runnable =
            std::fs::metadata(&candidate).is_ok_and(|md| md.is_file() && md.mode() & 0o111 != 0);
        if !runnable {
            before.push(PathBuf::from(dir));
            continue;
        }
        for d in &before {
            integrity::check_search_dir(d, name).map_err(|source| InterpreterError::Shadow {
                dir: d.clone(),
                found: candidate.clone(),
                name: name.to_os_string(),
                named_by: env.clone(),
                source: Box::new(source),
            })?;
        }
        return Ok((candidate, before));
    }
    Err(InterpreterError::NotOnPath {
        name: name.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(content: &[u8]) -> Result<Shebang, BadShebang> {
        parse_shebang(content).expect("starts with #!")
    }

    fn ok(interp: &str, arg: Option<&str>) -> Result<Shebang, BadShebang> {
        Ok(Shebang {
            interpreter: interp.into(),
            arg: arg.map(OsString::from),
        })
    }

    #[test]
    fn shebang_lines_as_the_kernel_reads_them() {
        assert_eq!(line(b"#!/bin/sh\n"), ok("/bin/sh", None));
        assert_eq!(line(b"#!/bin/sh"), ok("/bin/sh", None));
        assert_eq!(
            line(b"#! /bin/bash -eu\necho"),
            ok("/bin/bash", Some("-eu"))
        );
        assert_eq!(
            line(b"#!/usr/bin/env python3\n"),
            ok("/usr/bin/env", Some("python3"))
        );
        // One argument: the rest of the line, inner blanks kept, trailing
        // blanks dropped.
        assert_eq!(
            line(b"#!/usr/bin/env -S python3 -u  \t\n"),
            ok("/usr/bin/env", Some("-S python3 -u"))
        );
        // \r is not a line end: a CRLF file names "/bin/sh\r".
        assert_eq!(line(b"#!/bin/sh\r\n"), ok("/bin/sh\r", None));
        assert_eq!(line(b"#!/bin/sh -x\r\n"), ok("/bin/sh", Some("-x\r")));
        // NUL ends the name, and the argument.
        assert_eq!(line(b"#!/bin/sh\0-x\n"), ok("/bin/sh", None));
        assert_eq!(line(b"#!/bin/sh -x\0y\n"), ok("/bin/sh", Some("-x")));
        assert_eq!(line(b"#!\n"), Err(BadShebang::NoInterpreter));
        assert_eq!(line(b"#!   \t\n"), Err(BadShebang::NoInterpreter));
        assert_eq!(line(b"#!\0/bin/sh\n"), Err(BadShebang::NoInterpreter));
        // A blank then the buffer's NUL padding: the kernel passes "".
        assert_eq!(line(b"#!/bin/sh "), ok("/bin/sh", Some("")));
        assert_eq!(parse_shebang(b"echo hi\n"), None);
        // Not UTF-8 is still a path.
        assert_eq!(
            line(b"#!/opt/\xff/sh\n").unwrap().interpreter,
            PathBuf::from(OsStr::from_bytes(b"/opt/\xff/sh"))
        );
    }

    #[test]
    fn only_the_first_256_bytes_count() {
        // A name that does not end in the buffer: ENOEXEC.
        let long = format!("#!/{}/t\n", "a".repeat(300));
        assert_eq!(line(long.as_bytes()), Err(BadShebang::Truncated));
        // A name that ends in it, with an argument that does not: the
        // argument is cut at the buffer's last byte but one.
        let arg = "x".repeat(300);
        let text = format!("#!/bin/sh {arg}\n");
        let got = line(text.as_bytes()).unwrap();
        assert_eq!(got.interpreter, PathBuf::from("/bin/sh"));
        assert_eq!(
            got.arg.unwrap().len(),
            BINPRM_BUF_SIZE - 1 - "#!/bin/sh ".len()
        );
    }

    #[test]
    fn how_a_script_starts() {
        assert_eq!(start(false, b"#!/usr/bin/python3\n"), Ok(Start::Shell));
        assert_eq!(start(true, b"echo hi\n"), Ok(Start::Shell));
        assert_eq!(start(true, b"\x7fELF\x02\x01"), Ok(Start::Binary));
        assert!(matches!(start(true, b"#!/bin/sh\n"), Ok(Start::Shebang(_))));
        assert_eq!(start(true, b"#!\n"), Err(BadShebang::NoInterpreter));
    }

    #[test]
    fn env_forms() {
        let name = |arg: &str| {
            env_program(Path::new("/s"), Some(OsStr::new(arg)))
                .map(|n| n.to_string_lossy().into_owned())
                .map_err(|e| e.to_string())
        };
        assert_eq!(name("python3").unwrap(), "python3");
        assert_eq!(name("-S python3 -u").unwrap(), "python3");
        assert_eq!(name("-Spython3 -u").unwrap(), "python3");
        assert_eq!(name("-S\tbash -eu").unwrap(), "bash");
        // Without -S the whole argument is one name (env finds nothing).
        assert_eq!(name("python3 -u").unwrap(), "python3 -u");
        assert_eq!(name("/usr/bin/python3").unwrap(), "/usr/bin/python3");
        for (arg, says) in [
            ("-i python3", "option"),
            ("-S -i python3", "option"),
            ("-S PATH=/tmp python3", "assignment"),
            ("PATH=/tmp", "assignment"),
            ("-S", "no program name"),
            ("-S \"python3\"", "quotes"),
            ("-S ${PY}", "quotes"),
        ] {
            let e = name(arg).unwrap_err();
            assert!(e.contains(says), "{arg}: {e}");
        }
        assert!(name("").unwrap_err().contains("no program name"));
        assert!(env_program(Path::new("/s"), None)
            .unwrap_err()
            .to_string()
            .contains("no program name"));
    }
}

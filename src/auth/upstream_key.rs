//! The real Anthropic API key, read from a file when the configuration loads. The master reads
//! it as root, so the file can be 0600 root and never readable by workers or users.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamKeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty: it must hold the upstream API key on its first line")]
    Empty { path: String },
    /// Says where, never what: the byte is part of the key.
    #[error(
        "{path}: the key must be one line of printable ASCII (no spaces or control characters); byte {column} of the first line is not (the byte itself is not shown: it is part of the key)"
    )]
    NotPrintable { path: String, column: usize },
}

pub struct Loaded {
    pub key: Vec<u8>,
    /// Set when the file's permissions expose the key.
    pub warning: Option<String>,
}

pub fn load(path: &Path) -> Result<Loaded, UpstreamKeyError> {
    let p = path.display().to_string();
    let read_err = |source| UpstreamKeyError::Read {
        path: p.clone(),
        source,
    };
    // An API key is ~100 bytes; 64 KiB leaves room for comments and still bounds the read.
    let text = super::read_bounded(path, 64 << 10).map_err(read_err)?;
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode();
    let key = parse(&text).map_err(|e| match e {
        ParseError::Empty => UpstreamKeyError::Empty { path: p.clone() },
        ParseError::NotPrintable { column } => UpstreamKeyError::NotPrintable {
            path: p.clone(),
            column,
        },
    })?;
    Ok(Loaded {
        key,
        warning: exposure(&p, mode),
    })
}

/// What the file's permissions give away, if anything. Only nginx's master (root) needs to read
/// the key: a group or world read bit lets other accounts (the worker user among them) take it.
fn exposure(path: &str, mode: u32) -> Option<String> {
    let mode = mode & 0o777;
    if mode & 0o004 != 0 {
        Some(format!(
            "{path} is readable by every user (mode {mode:o}): chmod 600 it"
        ))
    } else if mode & 0o040 != 0 {
        Some(format!(
            "{path} is readable by its group (mode {mode:o}): chmod 600 (or 400) it, only root needs to read it"
        ))
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    /// `column`: 1-based byte offset in the first line of the first byte that is not.
    NotPrintable {
        column: usize,
    },
}

/// The first line, without surrounding whitespace; a header value must be printable ASCII.
pub fn parse(text: &[u8]) -> Result<Vec<u8>, ParseError> {
    let line = text.split(|&c| c == b'\n').next().unwrap_or_default();
    let first = line.trim_ascii();
    if first.is_empty() {
        return Err(ParseError::Empty);
    }
    if let Some(i) = first.iter().position(|&c| !c.is_ascii_graphic()) {
        let lead = line.len() - line.trim_ascii_start().len();
        return Err(ParseError::NotPrintable {
            column: lead + i + 1,
        });
    }
    Ok(first.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_trimmed() {
        assert_eq!(parse(b"  sk-ant-api03-abc\n").unwrap(), b"sk-ant-api03-abc");
        assert_eq!(
            parse(b"sk-ant-api03-abc\r\nextra").unwrap(),
            b"sk-ant-api03-abc"
        );
        assert_eq!(parse(b"\n").unwrap_err(), ParseError::Empty);
        let at = |column| ParseError::NotPrintable { column };
        assert_eq!(parse(b"sk ant").unwrap_err(), at(3));
        assert_eq!(parse(b"  sk\x01").unwrap_err(), at(5));
    }

    #[test]
    fn warns_when_world_readable() {
        let dir = std::env::temp_dir().join(format!("rg-upkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "sk-ant-api03-test\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&f).unwrap().warning.unwrap().contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let group = load(&f).unwrap().warning.unwrap();
        assert!(
            group.contains("readable by its group (mode 640)"),
            "{group}"
        );
        assert!(!group.contains("sk-ant"), "{group}");
        for quiet in [0o600, 0o400, 0o620] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(quiet)).unwrap();
            assert!(load(&f).unwrap().warning.is_none(), "mode {quiet:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Where a leak's text comes from: the command line, a file, standard input
//! or the sender's editor.
//!
//! Line endings are normalised to `\n` (email line endings are the exit's
//! business) and trailing whitespace is removed, so that a file or an
//! editor buffer ending in a newline sends the same text as an argument.

use std::{
    io::{IsTerminal as _, Read as _},
    path::{Path, PathBuf},
    process::Command,
};

use zeroize::Zeroizing;

/// The most bytes read from a file or standard input: far more than a leak
/// can hold, so a too-long text is reported with its length, but bounded.
const MAX_INPUT: u64 = 1 << 20;

/// Where to read the text from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given on the command line.
    Argument(String),
    /// A file (`-` is standard input).
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// The editor named by `$VISUAL` or `$EDITOR`.
    Editor(String),
}

/// Why there is no text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextSourceError {
    /// Both an argument and a file.
    #[error("give the message either as an argument or with --file, not both")]
    Both,
    /// Nothing given, standard input is a terminal and no editor is set.
    #[error(
        "no message: give it as an argument, with --file FILE, on standard input, or set $EDITOR to write it there"
    )]
    Nothing,
    /// The file or stream could not be read.
    #[error("cannot read the message from {what}: {error}")]
    Read {
        /// The file or "standard input".
        what: String,
        /// Why.
        error: std::io::Error,
    },
    /// The text is not UTF-8.
    #[error("the message in {0} is not valid UTF-8")]
    NotUtf8(String),
    /// The editor failed or was aborted.
    #[error("the editor {editor:?} {problem}")]
    Editor {
        /// The command.
        editor: String,
        /// What went wrong.
        problem: String,
    },
}

/// Decides where the text comes from. `editor_allowed` is false for
/// commands that should never open an editor.
pub fn choose_source(
    argument: Option<String>,
    file: Option<PathBuf>,
    editor_allowed: bool,
) -> Result<Source, TextSourceError> {
    match (argument, file) {
        (Some(_), Some(_)) => Err(TextSourceError::Both),
        (Some(text), None) => Ok(Source::Argument(text)),
        (None, Some(path)) if path == Path::new("-") => Ok(Source::Stdin),
        (None, Some(path)) => Ok(Source::File(path)),
        (None, None) if !std::io::stdin().is_terminal() => Ok(Source::Stdin),
        (None, None) => {
            let editor = std::env::var("VISUAL")
                .ok()
                .filter(|e| !e.trim().is_empty())
                .or_else(|| std::env::var("EDITOR").ok())
                .filter(|e| !e.trim().is_empty());
            match editor {
                Some(editor) if editor_allowed => Ok(Source::Editor(editor)),
                _ => Err(TextSourceError::Nothing),
            }
        }
    }
}

/// Reads the text. `scratch_dir` holds the editor's file (mode 0600,
/// overwritten and removed afterwards).
pub fn read(source: Source, scratch_dir: &Path) -> Result<Zeroizing<String>, TextSourceError> {
    let raw = match source {
        Source::Argument(text) => Zeroizing::new(text),
        Source::File(path) => {
            let what = path.display().to_string();
            let file = std::fs::File::open(&path).map_err(|error| TextSourceError::Read {
                what: what.clone(),
                error,
            })?;
            read_bounded(file, &what)?
        }
        Source::Stdin => read_bounded(std::io::stdin().lock(), "standard input")?,
        Source::Editor(editor) => edit(&editor, scratch_dir)?,
    };
    Ok(normalise(&raw))
}

fn read_bounded(
    reader: impl std::io::Read,
    what: &str,
) -> Result<Zeroizing<String>, TextSourceError> {
    let mut bytes = Zeroizing::new(Vec::new());
    reader
        .take(MAX_INPUT)
        .read_to_end(&mut bytes)
        .map_err(|error| TextSourceError::Read {
            what: what.to_owned(),
            error,
        })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => Err(TextSourceError::NotUtf8(what.to_owned())),
    }
}

fn edit(editor: &str, scratch_dir: &Path) -> Result<Zeroizing<String>, TextSourceError> {
    let fail = |problem: String| TextSourceError::Editor {
        editor: editor.to_owned(),
        problem,
    };
    // tempfile creates the file with mode 0600.
    let file = tempfile::Builder::new()
        .prefix("leak-message-")
        .suffix(".txt")
        .tempfile_in(scratch_dir)
        .map_err(|e| fail(format!("has no file to edit: {e}")))?;
    // `$EDITOR` may carry arguments ("code --wait"): run it through the shell,
    // with the file name as a positional parameter so it is never parsed.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .map_err(|e| fail(format!("could not be started: {e}")))?;
    let result = if status.success() {
        std::fs::File::open(file.path())
            .map_err(|error| TextSourceError::Read {
                what: "the editor's file".to_owned(),
                error,
            })
            .and_then(|f| read_bounded(f, "the editor's file"))
    } else {
        Err(fail(format!("exited with {status}; nothing sent")))
    };
    // Overwrite before unlinking: the text should not linger on disk.
    if let Ok(len) = std::fs::metadata(file.path()).map(|m| m.len()) {
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let _ = std::fs::write(file.path(), zeros);
    }
    drop(file);
    result
}

/// CRLF and lone CR become LF; trailing whitespace goes.
pub fn normalise(text: &str) -> Zeroizing<String> {
    let unified = Zeroizing::new(text.replace("\r\n", "\n").replace('\r', "\n"));
    Zeroizing::new(unified.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(*normalise("a\r\nb\rc\n\n  "), "a\nb\nc");
        assert_eq!(*normalise("  indented\n"), "  indented");
    }

    #[test]
    fn sources() {
        assert!(matches!(
            choose_source(Some("x".into()), Some("f".into()), true),
            Err(TextSourceError::Both)
        ));
        assert_eq!(
            choose_source(Some("x".into()), None, true).unwrap(),
            Source::Argument("x".into())
        );
        assert_eq!(
            choose_source(None, Some("-".into()), true).unwrap(),
            Source::Stdin
        );
        assert_eq!(
            choose_source(None, Some("m.txt".into()), true).unwrap(),
            Source::File("m.txt".into())
        );
    }

    #[test]
    fn files_and_editors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.txt");
        std::fs::write(&path, "from a file\r\n").unwrap();
        assert_eq!(
            *read(Source::File(path.clone()), dir.path()).unwrap(),
            "from a file"
        );
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read(Source::File(path), dir.path()),
            Err(TextSourceError::NotUtf8(_))
        ));
        // An "editor" that writes the message.
        let text = read(
            Source::Editor("f() { printf 'from the editor\\n' > \"$1\"; }; f".into()),
            dir.path(),
        )
        .unwrap();
        assert_eq!(*text, "from the editor");
        assert!(matches!(
            read(Source::Editor("false".into()), dir.path()),
            Err(TextSourceError::Editor { .. })
        ));
        // The scratch file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

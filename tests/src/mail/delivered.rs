//! Mail as a server stored it: a file of a [`Postfix`](super::Postfix)'s
//! Maildir or of an [`SmtpSink`](super::SmtpSink)'s dumps, with its headers
//! and text decoded for assertions.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// One message as a server stored it: a Maildir file of a [`Postfix`](super::Postfix)
/// (lines end in LF there) or a dump file of an [`SmtpSink`](super::SmtpSink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMail {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's bytes.
    pub raw: Vec<u8>,
}

impl DeliveredMail {
    /// Reads a message file.
    pub fn read(path: &Path) -> Self {
        let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self {
            path: path.to_path_buf(),
            raw,
        }
    }

    /// A message from its bytes (no file).
    pub fn from_bytes(raw: &[u8]) -> Self {
        Self {
            path: PathBuf::new(),
            raw: raw.to_vec(),
        }
    }

    /// The header section: the bytes up to the first empty line.
    pub fn header_bytes(&self) -> &[u8] {
        let (head, _) = split_message(&self.raw);
        head
    }

    /// The body: the bytes after the first empty line, as stored.
    pub fn body_bytes(&self) -> &[u8] {
        let (_, body) = split_message(&self.raw);
        body
    }

    /// Every header field in order as (name, value): folded lines joined
    /// (CRLF/LF removed, the folding whitespace kept), the value trimmed,
    /// encoded words left as they are.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in String::from_utf8_lossy(self.header_bytes()).split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        for (_, value) in &mut fields {
            *value = value.trim().to_owned();
        }
        fields
    }

    /// The first field named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every field named `name` (case-insensitive), in order, unfolded.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .collect()
    }

    /// The `Subject`, with RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        let message = self.parsed();
        message.subject().map(str::to_owned)
    }

    /// The text of the message: of a single-part `text/plain` message its
    /// body with the transfer encoding (quoted-printable, base64) and the
    /// charset decoded; of a multipart one the first part of its text body
    /// (an HTML part converted to text). Panics when there is none.
    pub fn body_text(&self) -> String {
        let message = self.parsed();
        message
            .body_text(0)
            .map(|text| text.into_owned())
            .unwrap_or_else(|| {
                panic!(
                    "{} has no text body:\n{}",
                    self.path.display(),
                    String::from_utf8_lossy(&self.raw)
                )
            })
    }

    /// The whole file as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("{} is not a message", self.path.display()))
    }
}

/// Splits a message at its first empty line (CRLF or LF).
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| start + i + 1);
        let line = &raw[start..end];
        if line == b"\n" || line == b"\r\n" {
            return (&raw[..start], &raw[end..]);
        }
        start = end;
    }
    (raw, &[])
}

/// The regular files of `dirs`, oldest first (by modification time, then
/// name), read whole.
pub(super) fn read_mail_files(dirs: &[PathBuf]) -> Vec<DeliveredMail> {
    let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() {
                files.push((
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    entry.path(),
                ));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, path)| {
            // A file may go from new/ to cur/ between listing and reading.
            let raw = fs::read(&path).ok()?;
            Some(DeliveredMail { path, raw })
        })
        .collect()
}

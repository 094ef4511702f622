//! The plain text of an emailed answer: what the exit keeps when a person
//! presses Reply on an anonymous message.
//!
//! [`extract`] takes the text/plain body (an HTML-only answer goes through
//! mail-parser's HTML-to-text, each outer `<blockquote>` turned into one quoted
//! `>` line and block tags into line breaks), counts the other parts without
//! reading them, then [`trim_reply`] keeps only what the person wrote:
//!
//! - everything is cut from the first line that introduces the original: an
//!   attribution (`On <date>, <name> wrote:`, its French, German, Spanish,
//!   Italian, Dutch and Portuguese forms, wrapped over up to three lines, or
//!   any line ending in ':' with an address just before a quote); a dashed
//!   separator ("-----Original Message-----"); a line of underscores before a
//!   From/De/Von header; a header block (From then two of Sent/Date/To/Subject,
//!   Envoyé/À/Objet, …); "Begin forwarded message:";
//! - quoted lines ('>' at any depth) go wherever they are; an attribution with
//!   nothing above it whose quote is answered inline goes alone, so the inline
//!   answers stay, in order;
//! - everything is cut from a signature separator ("-- " or "--") or a mobile
//!   sign-off alone on a line ("Sent from my iPhone", "Get Outlook for iOS", …);
//! - control characters but '\n' and '\t' go, line ends become '\n', trailing
//!   spaces go, blank lines collapse to one, leading and trailing ones go.
//!
//! The sender's own addresses (From, Sender, Reply-To) are then replaced by
//! "[address removed]" wherever they were typed, and the text is cut to the
//! byte budget at a character boundary. Every step is linear in the input.

use mail_parser::{HeaderName, Message, PartType, decoders::html::html_to_text};

/// What the exit keeps of an emailed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The person's own words, trimmed; never empty.
    pub text: String,
    /// Parts other than the body (files, inline images, forwarded mail), left out unread.
    pub dropped_attachments: usize,
    /// Whether the text came from an HTML body (there was no non-blank text/plain one).
    pub from_html: bool,
    /// Whether the text was cut to the byte budget.
    pub truncated: bool,
}

/// Why an email gives no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// The email has no text or HTML body (no part at all, or only attachments).
    Unparseable,
    /// Nothing of the person's own is left once quotes and signatures are gone.
    Empty,
}

/// What replaces the sender's own address in the text.
const ADDRESS_REMOVED: &str = "[address removed]";
/// Marks a block boundary in HTML: a line break unless one is already there.
const SOFT_BREAK: char = '\u{1}';
/// HTML tags that start or end a line.
const BLOCK_TAGS: &str = "div|p|hr|li|tr|table|ul|ol|pre|h1|h2|h3|h4|h5|h6";
/// How an attribution starts and its verb, in each language: "On … wrote:".
const ATTRIBUTIONS: &str =
    "on wrote|le a écrit|am schrieb|el escribió|il ha scritto|op schreef|em escreveu";
/// Lines that introduce a forwarded original (as [`norm`] leaves them).
const FORWARDS: &str =
    "begin forwarded message:|début du message réexpédié:|anfang der weitergeleiteten nachricht:";
/// Header names that open a quoted header block.
const FROM_HEADERS: &str = "from|de|von|da|van|från|fra";
/// Header names that follow the From one in a quoted header block.
const OTHER_HEADERS: &str = "sent|date|to|cc|subject|reply-to|envoyé|à|objet|gesendet|datum|an|\
    betreff|enviado|para|asunto|inviato|a|oggetto";
/// Starts of mobile and webmail sign-offs (as [`norm`] leaves them).
const SIGN_OFFS: &str = "sent from my |sent from mail for windows|sent from outlook|\
    sent from yahoo mail|get outlook for |envoyé de mon |envoyé depuis mon |envoyé à partir de |\
    obtenir outlook pour |von meinem iphone gesendet|gesendet von |enviado desde mi |inviato da ";

/// The answer a person wrote in `message`, at most `max_bytes` long.
pub fn extract(message: &Message<'_>, max_bytes: usize) -> Result<Extracted, NoAnswer> {
    let Some(root) = message.parts.first() else {
        return Err(NoAnswer::Unparseable);
    };
    let is_body = |id: &u32| message.text_body.contains(id) || message.html_body.contains(id);
    let dropped_attachments = message.attachments.iter().filter(|id| !is_body(id)).count();
    let bodies = |ids: &[u32], html: bool| -> Vec<String> {
        let parts = ids.iter().filter_map(|&id| message.parts.get(id as usize));
        let text = parts.filter_map(|part| match &part.body {
            PartType::Text(text) if !html => Some(text.to_string()),
            PartType::Html(html_text) if html => Some(html_lines(html_text)),
            _ => None,
        });
        text.collect()
    };
    let (mut body, mut from_html) = (bodies(&message.text_body, false), false);
    if body.iter().all(|text| text.trim().is_empty()) {
        let html = bodies(&message.html_body, true);
        from_html = !html.is_empty();
        if from_html || body.is_empty() {
            body = html;
        }
    }
    if body.is_empty() {
        return Err(NoAnswer::Unparseable);
    }
    let mut text = trim_reply(&body.join("\n"));
    for header in &root.headers {
        if let (HeaderName::From | HeaderName::Sender | HeaderName::ReplyTo, Some(addresses)) =
            (&header.name, header.value.as_address())
        {
            for address in addresses.iter().filter_map(|addr| addr.address()) {
                text = scrub(&text, address);
            }
        }
    }
    let truncated = text.len() > max_bytes;
    if truncated {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.truncate(text.trim_end().len());
    }
    if text.trim().is_empty() {
        return Err(NoAnswer::Empty);
    }
    Ok(Extracted {
        text,
        dropped_attachments,
        from_html,
        truncated,
    })
}

/// `text` with every case-insensitive occurrence of `address` replaced.
fn scrub(text: &str, address: &str) -> String {
    let needle = address.trim().to_ascii_lowercase();
    if needle.len() < 3 || !needle.contains('@') {
        return text.to_string();
    }
    // ASCII lowercasing keeps every byte offset, so the matches fit `text`.
    let lower = text.to_ascii_lowercase();
    let (mut out, mut last) = (String::with_capacity(text.len()), 0);
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(text.get(last..at).unwrap_or_default());
        out.push_str(ADDRESS_REMOVED);
        last = at + needle.len();
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// An HTML body as text lines through mail-parser's converter, which breaks
/// lines only at `<br>` and `</p>`: block tags break lines too, and each outer
/// `<blockquote>` becomes a single quoted line `>`.
fn html_lines(html: &str) -> String {
    let (mut prepared, mut depth, mut rest) = (String::with_capacity(html.len()), 0usize, html);
    while let Some(open) = rest.find('<') {
        if depth == 0 {
            prepared.push_str(&rest[..open]);
        }
        let after = &rest[open..];
        let tag = &after[..after.find('>').map_or(after.len(), |at| at + 1)];
        let name = tag.trim_start_matches(['<', '/']);
        let name = &name[..name
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(name.len())];
        if name.eq_ignore_ascii_case("blockquote") {
            if tag.starts_with("</") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 {
                depth = 1;
                prepared.extend([SOFT_BREAK, '>', SOFT_BREAK]);
            } else {
                depth += 1;
            }
        } else if depth == 0 {
            prepared.push_str(tag);
            if BLOCK_TAGS
                .split('|')
                .any(|block| name.eq_ignore_ascii_case(block))
            {
                prepared.push(SOFT_BREAK);
            }
        }
        rest = &after[tag.len()..];
    }
    if depth == 0 {
        prepared.push_str(rest);
    }
    let (mut text, mut line_has_text) = (String::with_capacity(prepared.len()), false);
    for c in html_to_text(&prepared).chars() {
        if c == SOFT_BREAK && !line_has_text {
            continue;
        }
        let c = if c == SOFT_BREAK { '\n' } else { c };
        line_has_text = c != '\n' && (line_has_text || !c.is_whitespace());
        text.push(c);
    }
    text.lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The person's own part of a reply's `text`, by the rules in the module doc.
pub fn trim_reply(text: &str) -> String {
    let clean: String = text
        .replace("\r\n", "\n")
        .chars()
        .map(|c| if c == '\r' { '\n' } else { c })
        .filter(|&c| c == '\n' || c == '\t' || !(c.is_control() || c == '\u{feff}'))
        .collect();
    let lines: Vec<&str> = clean.split('\n').map(str::trim_end).collect();
    let (mut kept, mut has_text, mut cut, mut at) = (Vec::new(), false, false, 0);
    while at < lines.len() && !cut {
        let line = lines[at];
        if is_quoted(line) {
            at += 1;
        } else if line.is_empty() {
            kept.push(line);
            at += 1;
        } else if is_signature(line) || starts_original(&lines[at..]) {
            cut = true;
        } else if let Some(len) = attribution(&lines[at..]) {
            cut = has_text || !answered_inline(&lines[at + len..]);
            at += len;
        } else {
            has_text = true;
            kept.push(line);
            at += 1;
        }
    }
    let is_rule = |l: &str| l.trim().chars().all(|c| matches!(c, '_' | '-' | '=' | '*'));
    while cut && kept.last().is_some_and(|l| is_rule(l)) {
        kept.pop();
    }
    let mut out: Vec<&str> = Vec::with_capacity(kept.len());
    for line in kept {
        if !line.is_empty() || out.last().is_some_and(|l| !l.is_empty()) {
            out.push(line);
        }
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// A line lowercased, its spaces collapsed and those before ':' removed (as
/// French typography puts them).
fn norm(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.join(" ").replace(" :", ":").to_lowercase()
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_signature(line: &str) -> bool {
    let line = norm(line);
    let line = line.trim_end_matches(['.', '!']);
    line == "--" || line.len() <= 60 && SIGN_OFFS.split('|').any(|s| line.starts_with(s))
}

/// Whether `line` looks like "Name: value" (bold stars allowed), Name among `names`.
fn is_header(line: &str, names: &str) -> bool {
    let line = norm(line);
    let name = line
        .trim_start_matches('*')
        .split_once(':')
        .map(|(name, _)| name);
    let name = name.unwrap_or_default().trim_end_matches('*').trim();
    !name.is_empty() && names.split('|').any(|known| known == name)
}

/// The first non-blank line among the next three of `lines`.
fn next_text<'a>(lines: &[&'a str]) -> Option<&'a str> {
    lines.iter().take(3).find(|l| !l.trim().is_empty()).copied()
}

/// Whether `lines` start with a dashed separator, a forward or a header block.
fn starts_original(lines: &[&str]) -> bool {
    let Some((first, rest)) = lines.split_first() else {
        return false;
    };
    let line = norm(first);
    let dashed = line.len() >= 6 && line.starts_with("---") && line.ends_with("---");
    let underscores = line.len() >= 8 && line.chars().all(|c| c == '_');
    let headers = || {
        rest.iter()
            .take(6)
            .filter(|l| is_header(l, OTHER_HEADERS))
            .count()
    };
    dashed && line.contains(char::is_alphabetic)
        || FORWARDS.split('|').any(|forward| forward == line)
        || underscores && next_text(rest).is_some_and(|l| is_header(l, FROM_HEADERS))
        || is_header(first, FROM_HEADERS) && headers() >= 2
}

/// The verb (" wrote") of the attribution that a normalised line starts like ("on ").
fn attribution_verb(line: &str) -> Option<String> {
    let mut pairs = ATTRIBUTIONS
        .split('|')
        .filter_map(|pair| pair.split_once(' '));
    let (_, verb) = pairs.find(|(start, _)| line.starts_with(&format!("{start} ")))?;
    Some(format!(" {verb}"))
}

/// How many lines an attribution at the start of `lines` spans: a known one
/// (wrapped over up to three lines, as Gmail does), or one line ending in ':'
/// with an address, just before a quote.
fn attribution(lines: &[&str]) -> Option<usize> {
    let mut joined = norm(lines.first()?);
    let verb = attribution_verb(&joined);
    for (n, line) in lines.iter().enumerate().take(3) {
        if n > 0 {
            let line = norm(line);
            let sentence_end = joined.ends_with(['.', '!', '?']);
            if verb.is_none() || line.is_empty() || is_quoted(&line) || sentence_end {
                return None;
            }
            if attribution_verb(&line).is_some() {
                return None; // a fresh attribution starts here
            }
            joined = format!("{joined} {line}");
        }
        let Some(text) = joined.strip_suffix(':') else {
            continue;
        };
        let dated = text.contains(|c: char| c.is_ascii_digit() || c == '@');
        if dated
            && verb
                .as_ref()
                .is_some_and(|verb| text.contains(verb.as_str()))
        {
            return Some(n + 1);
        }
        if n == 0 && text.contains('@') && next_text(&lines[1..]).is_some_and(is_quoted) {
            return Some(1);
        }
    }
    None
}

/// Whether what follows an attribution is its quote, answered inline below.
fn answered_inline(rest: &[&str]) -> bool {
    let mut body = rest.iter().filter(|l| !l.trim().is_empty());
    body.next().is_some_and(|l| is_quoted(l))
        && body
            .find(|l| !is_quoted(l))
            .is_some_and(|l| !is_signature(l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    const GMAIL: &str = r#"From: Alice Martin <alice@example.com>
Date: Mon, 3 Mar 2025 11:02:41 +0100
Message-ID: <CAF=abc123@mail.gmail.com>
Subject: Re: Meeting
To: Leak Exit <noreply@exit.leak.example>
Content-Type: multipart/alternative; boundary="000000000000a1b2c3"

--000000000000a1b2c3
Content-Type: text/plain; charset="UTF-8"

Thursday at 3pm works for me. I'll bring the documents.

Best,
Alice

On Mon, Mar 3, 2025 at 10:15 AM Leak Exit <noreply@exit.leak.example>
wrote:

> Hello, could we meet on Thursday? The secret plan is ready.
>

--000000000000a1b2c3
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Thursday (html)</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Mar 3, 2025 at 10:15 AM Leak Exit &lt;<a href="mailto:noreply@exit.leak.example">noreply@exit.leak.example</a>&gt; wrote:<br></div><blockquote class="gmail_quote">The secret plan.</blockquote></div>
--000000000000a1b2c3--
"#;

    const OUTLOOK: &str = r##"From: Alice Martin <alice@example.com>
To: "noreply@exit.leak.example" <noreply@exit.leak.example>
Subject: RE: Meeting
Date: Mon, 3 Mar 2025 10:20:00 +0000
Message-ID: <AM0PR01MB1234@AM0PR01MB1234.eurprd01.prod.outlook.com>
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable
MIME-Version: 1.0

<html><head><style>p {margin:0}</style></head><body dir=3D"ltr">
<div style=3D"font-family: Calibri">Yes, Thursday works for me.</div><div><br></div>
<div style=3D"font-family: Calibri">See you there &amp; thanks.</div>
<div id=3D"appendonsend"></div><hr style=3D"display:inline-block;width:98%" tabindex=3D"-1">
<div id=3D"divRplyFwdMsg" dir=3D"ltr"><font face=3D"Calibri, sans-serif" color=3D"#000000"><b>=
From:</b> Leak Exit &lt;noreply@exit.leak.example&gt;<br><b>Sent:</b> Monday, March 3, 2025 10=
:15 AM<br><b>To:</b> Alice Martin &lt;alice@example.com&gt;<br><b>Subject:</b> Meeting</font></div>
<div class=3D"PlainText">Hello, the secret plan is ready.</div></body></html>
"##;

    const THUNDERBIRD: &str = "From: Claire Dupont <claire@exemple.fr>
To: noreply@exit.leak.example
Subject: Re: Rendez-vous
Message-ID: <f00d@exemple.fr>
User-Agent: Mozilla Thunderbird
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 8bit

Le 03/03/2025 à 10:15, Leak Exit a écrit\u{a0}:
> Bonjour, le plan secret est prêt.
> Pouvez-vous confirmer ?

Oui, je confirme. À jeudi !
Écrivez-moi à CLAIRE@exemple.fr

-- 
Claire Dupont
";

    const IPHONE: &str = "From: Alice <alice@example.com>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable
Mime-Version: 1.0 (1.0)
Subject: Re: Meeting
To: Leak Exit <noreply@exit.leak.example>
X-Mailer: iPhone Mail (22D72)

Sounds good, see you Thursday =F0=9F=91=8D

Sent from my iPhone

> On Mar 3, 2025, at 10:15, Leak Exit <noreply@exit.leak.example> wrote:
>=20
> Hello, the secret plan is ready.
";

    const INLINE: &str = "From: alice@example.com
To: noreply@exit.leak.example
Subject: Re: Questions
Content-Type: text/plain; charset=UTF-8

On Mon, Mar 3, 2025 at 10:15 AM Leak Exit <noreply@exit.leak.example> wrote:

> Can you meet on Thursday?

Yes, after 3pm.

>> Will you bring the secret documents?
> > Only if asked.
Only the first two.
> Thanks, the secret team
>
";

    const ATTACHED: &str = r#"From: Alice <alice@example.com>
To: noreply@exit.leak.example
Subject: Re: Documents
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=UTF-8

Here is the file you asked for.

On Mon, 3 Mar 2025 at 10:15, Leak <noreply@exit.leak.example> wrote:
> Please send it.
--b1
Content-Type: application/pdf; name="secret.pdf"
Content-Disposition: attachment; filename="secret.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKU0VDUkVUIFBERg==
--b1
Content-Type: text/plain; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"

SECRET NOTES
--b1--
"#;

    /// `raw` (written with '\n') sent with CRLF line ends.
    fn run(raw: &str, max_bytes: usize) -> Result<Extracted, NoAnswer> {
        let raw = raw.replace('\n', "\r\n");
        let message = MessageParser::default().parse(raw.as_bytes());
        extract(&message.ok_or(NoAnswer::Unparseable)?, max_bytes)
    }

    /// The answer in `raw`, checked for anything of the original or an address.
    fn answer(raw: &str) -> Extracted {
        let answer = run(raw, 10_000).unwrap();
        let lower = answer.text.to_lowercase();
        for leak in ["secret", "@", "wrote", "écrit", "from:", "sent", "envoyé"] {
            assert!(!lower.contains(leak), "{leak} in {lower:?}");
        }
        answer
    }

    #[test]
    fn gmail_plain_reply_with_wrapped_attribution() {
        let text = "Thursday at 3pm works for me. I'll bring the documents.\n\nBest,\nAlice".into();
        let expected = Extracted {
            text,
            dropped_attachments: 0,
            from_html: false,
            truncated: false,
        };
        assert_eq!(answer(GMAIL), expected);
    }

    #[test]
    fn outlook_html_only_reply_with_header_block() {
        let answer = answer(OUTLOOK);
        let expected = "Yes, Thursday works for me.\n\nSee you there & thanks.";
        assert!(answer.text == expected && answer.from_html && !answer.truncated);
    }

    #[test]
    fn french_thunderbird_reply_below_quote() {
        let expected = "Oui, je confirme. À jeudi !\nÉcrivez-moi à [address removed]";
        assert_eq!(answer(THUNDERBIRD).text, expected);
    }

    #[test]
    fn apple_iphone_reply_with_sign_off_and_quote() {
        assert_eq!(answer(IPHONE).text, "Sounds good, see you Thursday 👍");
    }

    #[test]
    fn inline_answers_interleaved_with_quotes() {
        assert_eq!(
            answer(INLINE).text,
            "Yes, after 3pm.\n\nOnly the first two."
        );
    }

    #[test]
    fn attachment_is_counted_never_read() {
        let answer = answer(ATTACHED);
        assert_eq!(answer.text, "Here is the file you asked for.");
        assert!(answer.dropped_attachments == 2 && !answer.text.contains("JVBER"));
    }

    #[test]
    fn only_quotes_is_empty() {
        let reply = |body: &str| {
            let head =
                "From: alice@example.com\nTo: noreply@exit.leak.example\nSubject: Re: Hi\n\n";
            run(&format!("{head}{body}"), 99)
        };
        let quote =
            "On Mon, Mar 3, 2025 at 10:15 AM Leak <noreply@exit.leak.example> wrote:\n\n> Hi";
        assert_eq!(
            reply(&format!("{quote}\n\n-- \nAlice\n")),
            Err(NoAnswer::Empty)
        );
        assert_eq!(
            reply("> Hello\n>> older\n> secret\n\n"),
            Err(NoAnswer::Empty)
        );
        assert_eq!(reply(" \t\n\u{0}\n"), Err(NoAnswer::Empty));
        assert_eq!(
            reply(">Hello\nGood, thanks.\n").unwrap().text,
            "Good, thanks."
        );
        let file = "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n";
        assert_eq!(run(file, 99), Err(NoAnswer::Unparseable));
        assert_eq!(extract(&Message::default(), 99), Err(NoAnswer::Unparseable));
    }

    #[test]
    fn oversize_answer_truncated_at_char_boundary() {
        let body = "Ça coûte 5 € — d'accord 👍 ".repeat(20);
        let raw = format!("From: a@b.example\nContent-Type: text/plain; charset=utf-8\n\n{body}");
        let full = run(&raw, 10_000).unwrap().text;
        assert_eq!(full, body.trim_end());
        assert_eq!(run(&raw, 1), Err(NoAnswer::Empty)); // "Ç" takes two bytes
        for max in 2..full.len() + 2 {
            let answer = run(&raw, max).unwrap();
            let end = (0..=max.min(full.len()))
                .rev()
                .find(|&at| full.is_char_boundary(at));
            assert_eq!(answer.text, full[..end.unwrap()].trim_end());
            assert_eq!(answer.truncated, max < full.len());
        }
    }

    #[test]
    fn trim_reply_cuts_what_each_kind_of_client_adds() {
        for tail in [
            "\n\n-----Original Message-----\nFrom: Leak\nHello",
            "\n-----Message d'origine-----\nDe : Leak\nBonjour",
            "\n\nAm 03.03.2025 um 10:15 schrieb Leak <n@x.example>:\n> Hallo",
            "\n________________________________\nFrom: Leak <n@x.example>\nHello",
            "\r\nDe : Leak\r\nEnvoyé : lundi 3 mars\r\nÀ : Alice\r\nObjet : RDV\r\nBonjour",
            "\n*From:* Leak\n*Sent:* Monday\n*To:* Alice\n*Subject:* Hi\nHello",
            "\n\nBegin forwarded message:\n\nFrom: Leak\nHello",
            "\nLe lun. 3 mars 2025 à 10:15, Leak\n<n@x.example>\na écrit :\n\n> Bonjour\nX",
            "\n--\nAlice",
            "\n\nGet Outlook for Android\n\nFrom: x",
            "\nEnvoyé de mon iPhone",
            "\n\nSent from Mail for Windows\n\n",
            "\nEl lun, 3 mar 2025 a las 10:15, Leak (<n@x.example>) escribió:\n> Hola",
            "\nLeak <n@x.example> schrieb am Mo., 3. März 2025, 10:15:\n> Hallo",
        ] {
            assert_eq!(
                trim_reply(&format!("Yes, fine.{tail}")),
                "Yes, fine.",
                "{tail:?}"
            );
        }
        assert_eq!(
            trim_reply("\n\n a\u{0}b\u{7}\t \r\n\n\n\n\nc  \r\rd\n"),
            " ab\n\nc\n\nd"
        );
        let no_attribution = "On Monday I wrote: hi\nand said:\n\nbye\nOn Mars, 3 ships.";
        assert_eq!(trim_reply(no_attribution), no_attribution);
        let answer = "On Thursday I can come\nOn Mon, 3 Mar 2025, Leak <n@x.example> wrote:\n> Hi";
        assert_eq!(trim_reply(answer), "On Thursday I can come");
    }

    /// A small xorshift generator: the same inputs on every run.
    fn next(state: &mut u64) -> usize {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state as usize
    }

    fn check(raw: &[u8], max_bytes: usize) {
        let _ = trim_reply(&String::from_utf8_lossy(raw));
        // mail-parser's own debug assertions fire on a few broken MIME trees.
        let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw));
        if let Ok(Some(message)) = parsed
            && let Ok(answer) = extract(&message, max_bytes)
        {
            let text = answer.text;
            assert!(text.len() <= max_bytes && !text.trim().is_empty());
            assert!(!text.contains(|c: char| c.is_control() && c != '\n' && c != '\t'));
        }
    }

    #[test]
    fn never_panics_on_random_or_mutated_mail() {
        const TOKENS: &str = "\r\n|\n|:|>|<|&|;|--b1|Content-Type: text/html\r\n|<blockquote>|</blockquote>|\
            Content-Type: multipart/mixed; boundary=b1\r\n|=\r\n|&#x1F44D;|é|\0|<div>|-- |From: a@b\r\n|\
            Content-Transfer-Encoding: base64\r\n|Content-Type: message/rfc822\r\n|On 3 Mar, x@y wrote:";
        let tokens: Vec<&str> = TOKENS.split('|').collect();
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for round in 0..3000 {
            let mut raw = Vec::new();
            for _ in 0..next(&mut state) % 300 {
                let pick = next(&mut state);
                match round % 2 {
                    0 => raw.push(pick as u8),
                    _ => raw.extend_from_slice(tokens[pick % tokens.len()].as_bytes()),
                }
            }
            check(&raw, next(&mut state) % 200);
        }
        for email in [GMAIL, OUTLOOK, THUNDERBIRD, IPHONE, INLINE, ATTACHED] {
            for _ in 0..300 {
                let mut raw = email.replace('\n', "\r\n").into_bytes();
                for _ in 0..1 + next(&mut state) % 4 {
                    let at = next(&mut state) % (raw.len() + 1);
                    match next(&mut state) % 4 {
                        0 => raw.truncate(at),
                        1 => raw.insert(at, next(&mut state) as u8),
                        2 if at < raw.len() => drop(raw.remove(at)),
                        _ => drop(raw.splice(at..at, tokens[at % tokens.len()].bytes())),
                    }
                }
                check(&raw, next(&mut state) % 400);
            }
        }
    }
}

//! Delivery status notifications asked of the exit's mail server (RFC
//! 3461): the return path is the leak's own (VERP, [`Tokens::make_return`]),
//! `ENVID` repeats it, and each recipient asks for success, failure and
//! delay notices.
//!
//! [`Tokens::make_return`]: crate::exit::email::Tokens::make_return

use lettre::{
    address::Envelope,
    transport::smtp::{
        client::AsyncSmtpConnection,
        commands::{Data, Mail, Rcpt, Rset},
        extension::{Extension, MailBodyParameter, MailParameter, RcptParameter},
    },
};

/// Answers to `MAIL` that mean "no such parameter here" (a server without
/// the DSN extension): the email is sent again without asking for
/// notifications.
const UNSUPPORTED_PARAMETER: [&str; 4] = ["555", "501", "504", "502"];

/// One email over `conn`: what lettre's `send` does, with the DSN
/// parameters when `envid` is given. `Ok(true)`: sent with notifications
/// asked for.
pub(super) async fn transmit(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &[u8],
    envid: Option<&str>,
) -> Result<bool, lettre::transport::smtp::Error> {
    let Some(envid) = envid else {
        conn.send(envelope, bytes).await?;
        return Ok(false);
    };
    let other = |keyword: &str, value: &str| MailParameter::Other {
        keyword: keyword.into(),
        value: Some(value.into()),
    };
    let mut parameters = vec![other("RET", "HDRS"), other("ENVID", envid)];
    if !bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if let Err(e) = conn
        .command(Mail::new(envelope.from().cloned(), parameters))
        .await
    {
        let unsupported = e
            .status()
            .is_some_and(|code| UNSUPPORTED_PARAMETER.contains(&code.to_string().as_str()));
        if !unsupported {
            return Err(e);
        }
        conn.command(Rset).await?;
        conn.send(envelope, bytes).await?;
        return Ok(false);
    }
    for to in envelope.to() {
        let notify = RcptParameter::Other {
            keyword: "NOTIFY".into(),
            value: Some("SUCCESS,FAILURE,DELAY".into()),
        };
        conn.command(Rcpt::new(to.clone(), vec![notify])).await?;
    }
    conn.command(Data).await?;
    conn.message(bytes).await?;
    Ok(true)
}

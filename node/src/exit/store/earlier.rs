//! Opt-out records of the earlier forms, read once at start: the exit signs
//! its own again; other exits' are dropped.

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Deserialize;

use super::{ExitError, ExitStore};

/// Recipient hash → (when, in Unix ms; the exit that verified it).
/// Opt-outs before records carried opt-back-ins: read once, at start, to
/// sign this exit's own again (`ExitStore::take_earlier_opt_outs`), then dropped.
pub(super) const OPT_OUT_V1: TableDefinition<[u8; 32], (u64, [u8; 32])> =
    TableDefinition::new("exit_opt_out");
/// Records without evidence (format 2): read once, at start, to sign this
/// exit's own again; other exits' are dropped (a record without evidence
/// holds only at its own exit now).
pub(super) const OPT_OUT_V2: TableDefinition<[u8; 32], &[u8]> =
    TableDefinition::new("exit_opt_out_v2");
/// A record of `OPT_OUT_V2`.
#[derive(Deserialize)]
struct OptOutV2<'a> {
    exit: [u8; 32],
    recipient: [u8; 32],
    at: u64,
    out: bool,
    #[serde(borrow)]
    #[allow(dead_code)]
    signature: &'a [u8],
}

impl ExitStore {
    /// The records of the earlier forms that `exit` made itself (recipient
    /// hash, when in Unix seconds, out or back in), removing the earlier
    /// tables: the exit signs its own again; other exits' records are
    /// dropped (they carry no evidence, and hold only at their own exit).
    pub fn take_earlier_opt_outs(
        &self,
        exit: &[u8; 32],
    ) -> Result<Vec<([u8; 32], u64, bool)>, ExitError> {
        // Most starts find no earlier table: no write for them.
        let (v1, v2) = {
            let txn = self.store.db().begin_read()?;
            (
                txn.open_table(OPT_OUT_V1).is_ok(),
                txn.open_table(OPT_OUT_V2).is_ok(),
            )
        };
        if !v1 && !v2 {
            return Ok(Vec::new());
        }
        let txn = self.store.db().begin_write()?;
        let mut out = Vec::new();
        if v1 {
            {
                let table = txn.open_table(OPT_OUT_V1)?;
                for item in table.iter()? {
                    let (k, v) = item?;
                    let (at_ms, by) = v.value();
                    if &by == exit {
                        out.push((k.value(), at_ms / 1000, true));
                    }
                }
            }
            txn.delete_table(OPT_OUT_V1)?;
        }
        if v2 {
            {
                let table = txn.open_table(OPT_OUT_V2)?;
                for item in table.iter()? {
                    let (_, v) = item?;
                    if let Ok(r) = postcard::from_bytes::<OptOutV2<'_>>(v.value())
                        && &r.exit == exit
                    {
                        out.push((r.recipient, r.at, r.out));
                    }
                }
            }
            txn.delete_table(OPT_OUT_V2)?;
        }
        txn.commit()?;
        Ok(out)
    }
}

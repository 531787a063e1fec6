//! `writ audit list|export|verify`: the CA's hash-chained audit log.
//!
//! `list` and `export` read it through the admin socket. `verify` checks the chain from
//! an export file, from a data directory's database directly (the server stopped, or a
//! copy: sled lets one process open it), or, when the server holds that database,
//! through its admin socket. An export file must start at record 1; a data directory may
//! start later, when its oldest sealed segments were archived, and the report says where.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, Subcommand, error::ErrorKind};
use serde_json::json;
use writ_ca::audit::{AuditRecord, ChainBreak, ChainCheck, ChainHead, verify};
use writ_ca::store::Store;
use writ_proto::admin::AuditListRequest;
use writ_store::SledStore;

use crate::admin_client::{AdminTarget, status};
use crate::output::{self, Format, OutputArg, StdoutError, outln};

/// Records per admin request when reading the whole log.
const PAGE: u32 = 5000;

/// Audit log commands.
#[derive(Subcommand)]
pub enum Command {
    /// List audit records, oldest first.
    List(ListArgs),
    /// Print every record as one JSON line each (the input `verify --file` takes).
    Export(ExportArgs),
    /// Check the hash chain: names the first record that was modified, removed or moved.
    Verify(VerifyArgs),
    /// The journal's sealed segments, and which hold only expired certificates (safe to
    /// archive). Reads the data directory's files, beside a running server too.
    Segments(SegmentsArgs),
}

/// `writ audit segments` flags.
#[derive(Args)]
pub struct SegmentsArgs {
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ audit list` flags.
#[derive(Args)]
pub struct ListArgs {
    /// The first sequence number to show.
    #[arg(long, default_value_t = 1)]
    since: u64,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ audit export` flags.
#[derive(Args)]
pub struct ExportArgs {
    /// The first sequence number to export (verification needs the whole log, from 1).
    #[arg(long, default_value_t = 1)]
    since: u64,
    #[command(flatten)]
    target: AdminTarget,
}

/// `writ audit verify` flags.
#[derive(Args)]
struct VerifyFlags {
    /// A file written by `writ audit export` (JSON lines). Wins over WRIT_DATA_DIR and
    /// WRIT_ADMIN_SOCKET; not to be given with --data-dir or --admin-socket.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    target: AdminTarget,
    #[command(flatten)]
    output: OutputArg,
}

/// `writ audit verify` flags, once `--file` is checked against the flags beside it.
pub struct VerifyArgs(VerifyFlags);

impl VerifyArgs {
    /// Refuses `--file` with a server named on the command line. Not clap's
    /// `conflicts_with`: it counts a value taken from WRIT_DATA_DIR as given, so an
    /// exported variable would forbid checking an export file.
    fn refuse_conflicts(flags: &VerifyFlags, m: &ArgMatches) -> Result<(), clap::Error> {
        if flags.file.is_none() {
            return Ok(());
        }
        for (id, flag) in [
            ("data_dir", "--data-dir"),
            ("admin_socket", "--admin-socket"),
        ] {
            if m.value_source(id) == Some(ValueSource::CommandLine) {
                // Built on this command, for its usage line rather than the top level's.
                let mut cmd = VerifyFlags::augment_args(clap::Command::new("writ audit verify"));
                return Err(cmd.error(
                    ErrorKind::ArgumentConflict,
                    format!(
                        "--file checks an export file and {flag} names a server's log: give one of them"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl FromArgMatches for VerifyArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = VerifyFlags::from_arg_matches(m)?;
        Self::refuse_conflicts(&flags, m)?;
        Ok(Self(flags))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)?;
        Self::refuse_conflicts(&self.0, m)
    }
}

impl Args for VerifyArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        VerifyFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        VerifyFlags::augment_args_for_update(cmd)
    }
}

/// Runs an audit command.
pub async fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::List(a) => list(a).await,
        Command::Export(a) => export(a).await,
        Command::Verify(a) => verify_cmd(a).await,
        Command::Segments(a) => segments(a),
    }
}

fn segments(a: SegmentsArgs) -> anyhow::Result<()> {
    let dir = match (&a.target.data_dir, &a.target.admin_socket) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => {
            anyhow::bail!("audit segments reads the data directory's files: pass --data-dir")
        }
        (None, None) => writ_server::default_data_dir()?,
    };
    let db = dir.join("db");
    if !db.exists() {
        anyhow::bail!(
            "no CA database at {}: pass the server's --data-dir",
            db.display()
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let list = writ_store::sealed_segments(&db)?;
    // Archivable: every certificate it records has expired (or it records none).
    let archivable = |s: &writ_store::SegmentInfo| s.valid_until.is_none_or(|t| t <= now);
    match a.output.format {
        Format::Json => output::json(&json!({
            "segments": list.iter().map(|s| json!({
                "file": s.file,
                "first_seq": s.first_seq,
                "last_seq": s.last_seq,
                "bytes": s.bytes,
                "certificates": s.certificates,
                "valid_until": s.valid_until,
                "archivable": archivable(s),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            if list.is_empty() {
                outln!(
                    "no sealed segments in {}: the journal is sealed past audit_segment_bytes",
                    dir.display()
                )?;
            }
            for s in &list {
                let until = s.valid_until.map_or_else(
                    || "no certificates".to_owned(),
                    |t| {
                        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
                        format!("valid until {}", humantime::format_rfc3339_seconds(t))
                    },
                );
                let verdict = if archivable(s) {
                    "archivable (move it with its .summary)"
                } else {
                    "holds valid certificates"
                };
                outln!(
                    "{}  records {}-{}  {:.1} MiB  {}, {until}  {verdict}",
                    s.file.display(),
                    s.first_seq,
                    s.last_seq,
                    s.bytes as f64 / (1024.0 * 1024.0),
                    output::count(s.certificates, "certificate", "certificates"),
                )?;
            }
            Ok(())
        }
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    let r = admin
        .audit_list(AuditListRequest {
            since: a.since,
            limit: a.limit,
        })
        .await
        .map_err(status)?
        .into_inner();
    let records: Vec<AuditRecord> = r
        .records
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("server sent {l:?}")))
        .collect::<anyhow::Result<_>>()?;
    match a.output.format {
        Format::Json => output::json(&json!({ "records": records }))?,
        Format::Text => {
            if records.is_empty() {
                // Not on stdout: a script reading the listing sees no records either way.
                eprintln!("{}", nothing_listed(a.since, r.last_seq));
            }
            for r in &records {
                let e = &r.event;
                let mut line = format!(
                    "{:>6}  {}  {:<14} {}",
                    r.seq,
                    output::time(r.time as i64),
                    e.action.as_str(),
                    e.actor
                );
                for part in [&e.spiffe_id, &e.serial, &e.detail].into_iter().flatten() {
                    line.push_str("  ");
                    line.push_str(part);
                }
                outln!("{line}")?;
            }
        }
    }
    Ok(())
}

/// Why `audit list --since since` listed nothing, given the log's newest record `last`
/// (0: the log is empty, or the server predates reporting it).
fn nothing_listed(since: u64, last: u64) -> String {
    match last {
        0 if since <= 1 => "the audit log is empty".to_owned(),
        0 => format!("no audit records from #{since} on"),
        last if last < since => {
            format!("no audit records from #{since} on; the log ends at #{last}")
        }
        // Only records of segments moved out of the data directory are missing.
        last => format!(
            "no audit records from #{since} on are here; the log ends at #{last}, in archived segments"
        ),
    }
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    let mut admin = a.target.connect().await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut since = a.since;
    loop {
        let r = admin
            .audit_list(AuditListRequest { since, limit: PAGE })
            .await
            .map_err(status)?
            .into_inner();
        for line in &r.records {
            writeln!(out, "{line}").map_err(StdoutError)?;
        }
        if r.records.len() < PAGE as usize {
            break;
        }
        let last: AuditRecord =
            serde_json::from_str(r.records.last().map_or("", String::as_str))
                .context("the last record of a page is unreadable; export stops here")?;
        since = last.seq + 1;
    }
    out.flush().map_err(StdoutError)?;
    Ok(())
}

async fn verify_cmd(VerifyArgs(a): VerifyArgs) -> anyhow::Result<()> {
    let (source, result) = if let Some(file) = &a.file {
        let f = std::fs::File::open(file)
            .with_context(|| format!("opening the audit export {}", file.display()))?;
        let lines = std::io::BufReader::new(f).lines();
        let mut io_error = None;
        let records = lines.map_while(|l| match l {
            Ok(l) => Some(serde_json::from_str::<AuditRecord>(&l).map_err(|e| e.to_string())),
            Err(e) => {
                io_error = Some(e);
                None
            }
        });
        let result = verify(records);
        if let Some(e) = io_error {
            return Err(e).with_context(|| format!("reading {}", file.display()));
        }
        (file.display().to_string(), result)
    } else {
        from_data_dir(&a.target).await?
    };
    report(&source, result, a.output.format)
}

/// Opens the database directly; if the running server holds it, reads through the admin
/// socket instead.
async fn from_data_dir(
    target: &AdminTarget,
) -> anyhow::Result<(String, Result<ChainHead, ChainBreak>)> {
    let dir = match (&target.data_dir, &target.admin_socket) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => return Ok(("the admin socket".into(), through_socket(target).await?)),
        (None, None) => writ_server::default_data_dir()?,
    };
    let db = dir.join("db");
    if !db.exists() {
        anyhow::bail!(
            "no CA database at {}: pass the server's --data-dir, or --file with an export",
            db.display()
        );
    }
    match SledStore::open(&db) {
        Ok(store) => {
            // Record by record: a long log is never held in memory.
            let mut check = ChainCheck::new(true);
            let mut broken = None;
            store.for_each_audit(0, &mut |r| match check.push(r) {
                Ok(()) => true,
                Err(b) => {
                    broken = Some(b);
                    false
                }
            })?;
            Ok((db.display().to_string(), outcome(check, broken)))
        }
        Err(e) if e.to_string().contains("locked by another process") => {
            eprintln!(
                "{} is held by the running server; verifying through its admin socket",
                db.display()
            );
            Ok(("the admin socket".into(), through_socket(target).await?))
        }
        Err(e) => Err(e.into()),
    }
}

async fn through_socket(target: &AdminTarget) -> anyhow::Result<Result<ChainHead, ChainBreak>> {
    let mut admin = target.connect().await?;
    let mut check = ChainCheck::new(true);
    let mut since = 1;
    loop {
        let r = admin
            .audit_list(AuditListRequest { since, limit: PAGE })
            .await
            .map_err(status)?
            .into_inner();
        let n = r.records.len();
        for line in r.records {
            let parsed = serde_json::from_str::<AuditRecord>(&line).map_err(|e| e.to_string());
            if let Ok(rec) = &parsed {
                since = rec.seq + 1;
            }
            if let Err(b) = check.push(parsed) {
                return Ok(Err(b));
            }
        }
        if n < PAGE as usize {
            break;
        }
    }
    Ok(Ok(check.finish()))
}

/// The verdict of a check that stopped at `broken`, or ran through.
fn outcome(check: ChainCheck, broken: Option<ChainBreak>) -> Result<ChainHead, ChainBreak> {
    match broken {
        Some(b) => Err(b),
        None => Ok(check.finish()),
    }
}

fn report(
    source: &str,
    result: Result<ChainHead, ChainBreak>,
    format: Format,
) -> anyhow::Result<()> {
    match (result, format) {
        (Ok(head), Format::Json) => output::json(&json!({
            "ok": true,
            "source": source,
            "records": head.records,
            "first_seq": head.first_seq,
            "head_seq": head.seq,
            "head_hash": head.hash,
        })),
        (Ok(head), Format::Text) => {
            if head.first_seq > 1 {
                outln!(
                    "records before {0} are not here (archived segments): checked from record {0} on; verify the archive with them to cover all of history",
                    head.first_seq
                )?;
            }
            outln!(
                "audit log intact: {}; head {} {} (note it: removing the newest records is only detectable against a head noted earlier)",
                output::count(head.records, "record", "records"),
                head.seq,
                head.hash
            )?;
            Ok(())
        }
        (Err(b), Format::Json) => {
            // A reader that left early must not turn a broken chain into exit status 0.
            output::unless_broken_pipe(output::json(&json!({
                "ok": false,
                "source": source,
                "broken_at": b.seq(),
                "error": b.to_string(),
            })))?;
            anyhow::bail!("audit log chain broken at record {}", b.seq())
        }
        (Err(b), Format::Text) => anyhow::bail!("{source}: {b}"),
    }
}

//! `boulder transform`: a tenant's chain, offline, on line protocol.
//!
//! The same runtime, components, params and limits as production, so a tenant can
//! see exactly what its chain keeps, drops and dead-letters before shipping it.

use super::ConfigArg;
use anyhow::{bail, Context, Result};
use boulder::batch::{Batch, Format};
use boulder::config::Config;
use boulder::decode::{influx_line, Precision};
use boulder::encode::line_protocol;
use boulder::runtime::{Chain, Rejected, Routed, Router, Runtime, RuntimeSettings};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The tenant whose chain to run. May be left out when the config has one tenant.
    #[arg(long, short)]
    tenant: Option<String>,
    /// Run the router first, and pass on only the points it gives the tenant.
    #[arg(long)]
    route: bool,
    /// The source topic the points appear to come from (routers may match on it).
    #[arg(long, default_value = "stdin")]
    topic: String,
    /// Unit of the input's timestamps.
    #[arg(long, default_value = "ns")]
    precision: Precision,
    /// Points per batch, as the production pipeline would batch them.
    #[arg(long, default_value_t = 1000)]
    batch_points: usize,
    /// Line protocol to read; `-` or nothing reads stdin.
    input: Option<PathBuf>,
}

/// What happened to the points, for the summary.
#[derive(Default)]
struct Tally {
    read: usize,
    kept: usize,
    elsewhere: usize,
    decode_errors: Vec<String>,
    /// (dead-letter?, where, reason) → count
    rejected: BTreeMap<(bool, String, String), usize>,
    chain_time: std::time::Duration,
    batches: usize,
}

impl Tally {
    fn reject(&mut self, dead_letter: bool, at: String, reason: String, n: usize) {
        *self.rejected.entry((dead_letter, at, reason)).or_default() += n;
    }

    fn add(&mut self, rejected: &[Rejected]) {
        for r in rejected {
            self.reject(r.dead_letter, r.stage.to_string(), r.reason.clone(), 1);
        }
    }
}

pub fn run(args: TransformArgs) -> Result<()> {
    let config = Config::load(&args.config.config)?;
    let tenant = match &args.tenant {
        Some(name) => config.tenant(name).with_context(|| {
            format!(
                "no tenant {name:?} in {} (it has: {})",
                args.config.config.display(),
                names(&config)
            )
        })?,
        None if config.tenants.len() == 1 => &config.tenants[0],
        None => bail!(
            "say which tenant with --tenant (the config has: {})",
            names(&config)
        ),
    };
    if args.batch_points == 0 {
        bail!("--batch-points must be at least 1");
    }
    let runtime = Runtime::new(RuntimeSettings::from_config(&config))?;
    let router = if args.route {
        Some(Router::load(&runtime, &config)?.context("--route, but the config has no [router]")?)
    } else {
        None
    };
    let chain = Chain::load(&runtime, &config, tenant)?;

    let input = read_input(&args.input)?;
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
    let mut all = Batch::new();
    let source = all.source(&args.topic, Format::InfluxLine);
    let errors = influx_line::decode(&input, args.precision, now_ns, source, &mut all);
    let mut tally = Tally {
        read: all.len(),
        decode_errors: errors.iter().map(|e| e.to_string()).collect(),
        ..Tally::default()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut text = Vec::new();
    let mut start = 0;
    while start < all.len() {
        let end = (start + args.batch_points).min(all.len());
        let mut batch = Batch::with_capacity(end - start);
        for i in start..end {
            batch.copy_point_from(&all, i);
        }
        start = end;
        let began = Instant::now();
        let mine = match &router {
            None => Some(Routed::Batch(batch)),
            Some(router) => route(router, &batch, &chain, &mut tally),
        };
        let Some(mine) = mine else { continue };
        match chain.run_routed(&mine) {
            Ok(output) => {
                tally.chain_time += began.elapsed();
                tally.batches += 1;
                tally.add(&output.rejected);
                text.clear();
                let unwritable = line_protocol::write_batch(&output.batch, &mut text);
                tally.kept += output.batch.len() - unwritable.len();
                for (_, why) in unwritable {
                    tally.reject(true, "line protocol".into(), why.to_string(), 1);
                }
                out.write_all(&text)?;
            }
            Err(e) => {
                tally.reject(
                    true,
                    e.stage.to_string(),
                    format!("batch failed: guest {}", e.failure),
                    mine.len(),
                );
            }
        }
    }
    out.flush()?;
    summarise(&tally, chain.tenant());
    Ok(())
}

/// The points the router gives `chain`'s tenant; the rest are tallied.
fn route(router: &Router, batch: &Batch, chain: &Chain, tally: &mut Tally) -> Option<Routed> {
    match router.route(batch) {
        Ok(mut routed) => {
            tally.add(&routed.rejected);
            let mine = routed.by_tenant.remove(chain.tenant());
            tally.elsewhere += routed.by_tenant.values().map(Routed::len).sum::<usize>();
            mine
        }
        Err(e) => {
            let reason = format!("batch failed: guest {}", e.failure);
            tally.reject(true, e.stage.to_string(), reason, batch.len());
            None
        }
    }
}

fn read_input(path: &Option<PathBuf>) -> Result<Vec<u8>> {
    let mut input = Vec::new();
    match path {
        Some(p) if p.as_os_str() != "-" => {
            input = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut input)
                .context("reading stdin")?;
        }
    }
    Ok(input)
}

fn names(config: &Config) -> String {
    let names: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
    if names.is_empty() {
        "no tenants".into()
    } else {
        names.join(", ")
    }
}

fn summarise(t: &Tally, tenant: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "--- boulder transform, tenant '{tenant}' ---");
    let _ = writeln!(e, "read        {} points", t.read);
    if !t.decode_errors.is_empty() {
        let _ = writeln!(
            e,
            "undecodable {} lines (dead-lettered in production):",
            t.decode_errors.len()
        );
        for err in t.decode_errors.iter().take(10) {
            let _ = writeln!(e, "    {err}");
        }
        if t.decode_errors.len() > 10 {
            let _ = writeln!(e, "    ... and {} more", t.decode_errors.len() - 10);
        }
    }
    if t.elsewhere > 0 {
        let _ = writeln!(e, "routed to other tenants {} points", t.elsewhere);
    }
    let _ = writeln!(e, "kept        {} points (on stdout)", t.kept);
    for (label, dead_letter) in [("dropped", false), ("dead-lettered", true)] {
        let rows: Vec<_> = t
            .rejected
            .iter()
            .filter(|((d, _, _), _)| *d == dead_letter)
            .collect();
        let total: usize = rows.iter().map(|(_, n)| **n).sum();
        let _ = writeln!(e, "{label:<11} {total} points");
        for ((_, at, reason), n) in rows {
            let _ = writeln!(e, "    {n:>8}  {at}: {reason}");
        }
    }
    if t.batches > 0 {
        let per_batch = t.chain_time / t.batches as u32;
        let _ = writeln!(
            e,
            "time        {:?} per batch through the chain ({} batches)",
            per_batch, t.batches
        );
    }
}

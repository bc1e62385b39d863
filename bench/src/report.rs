//! Tables (printed as Markdown, so a run can be pasted into a document as is) and the JSON report.

use crate::procfs::{CpuTimes, Machine};
use crate::scenario::{bulk, game, idle, setup};
use serde::{Serialize, Serializer};
use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// When the run started, UTC.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// Rounds per case.
    pub rounds: usize,
    /// Other processes that were busy when the run started.
    pub background: Vec<crate::procfs::Busy>,
    /// One entry per scenario case, in the order run.
    pub results: Vec<Case>,
}

/// One scenario case and how much CPU time the host took from the machine while it ran.
#[derive(Debug, Serialize)]
pub struct Case {
    /// What was measured.
    #[serde(flatten)]
    pub section: Section,
    /// Hypervisor steal over the whole case, every target and round, in percent of all CPU time.
    pub steal_percent: Option<f64>,
}

/// Steal above this share makes a case's figures unreliable even within the run: the host took the CPUs
/// away for some targets' rounds and not others.
const STEAL_WARNING_PERCENT: f64 = 2.0;

impl Case {
    /// Runs `measure` and notes the steal while it ran.
    pub fn measure(measure: impl FnOnce() -> Section) -> Case {
        let before = CpuTimes::now();
        let section = measure();
        let steal_percent = before
            .zip(CpuTimes::now())
            .and_then(|(b, a)| b.steal_percent_until(a));
        Case {
            section,
            steal_percent,
        }
    }

    /// The case's table, with the steal under it.
    pub fn table(&self) -> Table {
        let mut table = self.section.table();
        match self.steal_percent {
            Some(p) if p > STEAL_WARNING_PERCENT => table.note(format!(
                "hypervisor steal {p:.1} % of CPU time during this case: the host ran other work on \
                 these CPUs, so its figures (latency tails and CPU per unit most) are unreliable; \
                 repeat the case"
            )),
            Some(p) => table.note(format!("hypervisor steal {p:.1} % of CPU time during this case")),
            None => {}
        }
        table
    }
}

/// The result of one scenario case.
#[derive(Debug, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Section {
    /// Game traffic.
    Game {
        /// The case.
        config: game::GameConfig,
        /// One row per target.
        rows: Vec<game::GameRow>,
    },
    /// Bulk throughput.
    Bulk {
        /// The case.
        config: bulk::BulkConfig,
        /// One row per target.
        rows: Vec<bulk::BulkRow>,
    },
    /// Session setup.
    Setup {
        /// The case.
        config: setup::SetupConfig,
        /// One row per target.
        rows: Vec<setup::SetupRow>,
    },
    /// Idle memory.
    Idle {
        /// The case.
        config: idle::IdleConfig,
        /// One row per proxy.
        rows: Vec<idle::IdleRow>,
    },
}

impl Section {
    /// The section as a table.
    pub fn table(&self) -> Table {
        match self {
            Section::Game { config, rows } => game::table(config, rows),
            Section::Bulk { config, rows } => bulk::table(config, rows),
            Section::Setup { config, rows } => setup::table(config, rows),
            Section::Idle { config, rows } => idle::table(config, rows),
        }
    }
}

impl Report {
    /// The lines printed above the tables.
    pub fn header(&self) -> String {
        let background = if self.background.is_empty() {
            "none over 10% of a CPU".to_owned()
        } else {
            self.background
                .iter()
                .map(|b| {
                    format!(
                        "{} (pid {}, nice {}) {:.0}%",
                        b.comm, b.pid, b.nice, b.cpu_percent
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "command: `{}`\ndate: {}\nmachine: nproc={}, kernel {}, {}, {} MiB RAM\nrounds: {} (targets interleaved, order rotated each round)\nother load at start: {background}\n",
            self.command,
            self.date,
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.machine.memory_mib,
            self.rounds
        )
    }
}

/// A titled table with notes and per-row errors.
#[derive(Debug)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    errors: Vec<String>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new(title: String, headers: &[&str]) -> Table {
        Table {
            title,
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row; `error` is printed under the table, naming the row's first cell.
    pub fn row(&mut self, cells: Vec<String>, error: Option<&str>) {
        if let Some(e) = error {
            let first_line = e.lines().next().unwrap_or(e);
            self.errors.push(format!("{}: {first_line}", cells[0]));
        }
        self.rows.push(cells);
    }

    /// Adds a note printed under the table.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                // Names left, figures right.
                if i == 0 {
                    let _ = write!(s, " {c}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(s, " {}{c} |", " ".repeat(pad));
                }
            }
            s
        };
        writeln!(f, "### {}\n", self.title)?;
        writeln!(f, "{}", line(&self.headers))?;
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if i == 0 {
                    "-".repeat(w)
                } else {
                    format!("{}:", "-".repeat(w.saturating_sub(1)))
                }
            })
            .collect();
        writeln!(f, "{}", line(&rule))?;
        for r in &self.rows {
            writeln!(f, "{}", line(r))?;
        }
        writeln!(f)?;
        for e in &self.errors {
            writeln!(f, "- error: {e}")?;
        }
        for n in &self.notes {
            writeln!(f, "- {n}")?;
        }
        Ok(())
    }
}

/// `v` with `digits` decimals.
pub fn fmt_f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// `v` with `digits` decimals, or a dash.
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |v| fmt_f(v, digits))
}

/// `v` with a sign.
pub fn fmt_signed(v: f64, digits: usize) -> String {
    format!("{v:+.digits$}")
}

/// A ratio as `1.23×`, or a dash.
pub fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2}×"))
}

/// Serialises a duration as seconds.
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
    }

    #[test]
    fn table_aligns_and_lists_errors() {
        let mut t = Table::new("t".into(), &["target", "x"]);
        t.row(vec!["direct".into(), "1".into()], None);
        t.row(vec!["p".into(), "100".into()], Some("broke\nmore"));
        let s = t.to_string();
        assert!(s.contains("| direct |   1 |"), "{s}");
        assert!(s.contains("| p      | 100 |"), "{s}");
        assert!(s.contains("- error: p: broke\n"), "{s}");
    }
}

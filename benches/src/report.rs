//! The Markdown table the load harness prints.

use std::fmt;

/// One row: a measurement of ours next to the alternative.
#[derive(Clone, Debug)]
pub struct Row {
    /// The scenario number and name.
    pub scenario: String,
    /// What is measured.
    pub metric: String,
    /// Ours.
    pub ours: String,
    /// The alternative (or the ideal, where there is no alternative).
    pub alternative: String,
    /// Ours relative to the alternative, in the direction of "better".
    pub ratio: String,
    /// The goal, and whether it is met.
    pub goal: String,
    /// The command that reproduces the row.
    pub command: String,
}

impl Row {
    /// A row with a ratio `better_factor` (how many times better ours is) against `goal_factor`.
    pub fn compared(
        scenario: &str,
        metric: &str,
        ours: String,
        alternative: String,
        better_factor: f64,
        goal_factor: Option<f64>,
    ) -> Self {
        let goal = match goal_factor {
            Some(goal) => format!("≥ {goal}× {}", verdict(better_factor >= goal)),
            None => String::new(),
        };
        Self {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            ours,
            alternative,
            ratio: format!("{better_factor:.2}×"),
            goal,
            command: String::new(),
        }
    }

    /// A row without a ratio.
    pub fn plain(
        scenario: &str,
        metric: &str,
        ours: String,
        alternative: String,
        goal: String,
    ) -> Self {
        Self {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            ours,
            alternative,
            ratio: String::new(),
            goal,
            command: String::new(),
        }
    }
}

/// "met" or "**missed**".
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Rows printed as a Markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// The rows, in order.
    pub rows: Vec<Row>,
}

impl Table {
    /// Appends rows, each reproduced by `command`.
    pub fn extend(&mut self, command: &str, rows: impl IntoIterator<Item = Row>) {
        self.rows.extend(rows.into_iter().map(|mut row| {
            row.command = command.to_owned();
            row
        }));
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| scenario | metric | ours | alternative | ratio | goal | command |"
        )?;
        writeln!(f, "|---|---|---:|---:|---:|---|---|")?;
        for r in &self.rows {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | `{}` |",
                r.scenario, r.metric, r.ours, r.alternative, r.ratio, r.goal, r.command
            )?;
        }
        Ok(())
    }
}

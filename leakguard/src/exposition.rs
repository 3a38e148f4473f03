//! Metrics exposition, a leaf: the metric family type, rendered as Prometheus text (format
//! 0.0.4) for `/metrics` and recorded through the `metrics` facade so a service's own recorder
//! sees them too. What the families hold is made elsewhere (the guard's snapshot, the caches'
//! and handles' registries).

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
}

/// Label names and values of one series.
pub(crate) type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub series: Vec<(Labels, f64)>,
}

/// Families being collected for one exposition: a family without series is left out rather
/// than reported empty. The one place that rule is kept.
#[derive(Debug, Default)]
pub(crate) struct Families(Vec<Family>);

impl Families {
    /// Adds a family, if it has series.
    pub(crate) fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        series: Vec<(Labels, f64)>,
    ) {
        if !series.is_empty() {
            self.0.push(Family {
                name,
                help,
                kind,
                series,
            });
        }
    }

    /// Adds a gauge of one unlabelled series, if there is a value.
    pub(crate) fn gauge(&mut self, name: &'static str, help: &'static str, value: Option<f64>) {
        self.add(
            name,
            help,
            Kind::Gauge,
            value.map(|v| (Vec::new(), v)).into_iter().collect(),
        );
    }

    /// Adds a counter of one unlabelled series.
    pub(crate) fn counter(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.add(name, help, Kind::Counter, vec![(Vec::new(), value)]);
    }

    /// Adds families made elsewhere, leaving out those without series.
    pub(crate) fn extend(&mut self, families: impl IntoIterator<Item = Family>) {
        self.0
            .extend(families.into_iter().filter(|f| !f.series.is_empty()));
    }

    /// The families collected.
    pub(crate) fn into_vec(self) -> Vec<Family> {
        self.0
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Renders families in the Prometheus text exposition format 0.0.4.
pub(crate) fn render(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for fam in families {
        let kind = match fam.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} {kind}", fam.name);
        for (labels, value) in &fam.series {
            out.push_str(fam.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(*value, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Records families through the `metrics` facade (a no-op when the service installed no
/// recorder).
pub(crate) fn record(families: &[Family]) {
    for fam in families {
        for (labels, value) in &fam.series {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            match fam.kind {
                Kind::Gauge => metrics::gauge!(fam.name, labels).set(*value),
                Kind::Counter => metrics::counter!(fam.name, labels).absolute(*value as u64),
            }
        }
    }
}

/// Describes the families to the `metrics` facade (help texts), once per guard start.
pub(crate) fn describe(families: &[Family]) {
    for fam in families {
        match fam.kind {
            Kind::Gauge => metrics::describe_gauge!(fam.name, fam.help),
            Kind::Counter => metrics::describe_counter!(fam.name, fam.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_integers_printed_plainly() {
        let fams = vec![Family {
            name: "x_total",
            help: "h",
            kind: Kind::Counter,
            series: vec![
                (vec![("a", "q\"\\\nz".to_owned())], 3.0),
                (vec![], 0.25),
                (vec![], f64::NAN),
            ],
        }];
        let text = render(&fams);
        assert_eq!(
            text,
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\nz\"} 3\nx_total 0.25\nx_total NaN\n"
        );
    }
}

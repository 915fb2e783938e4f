//! A minimal Prometheus text-format (0.0.4) writer shared by every daemon's `/metrics`.

use std::fmt::Write;

/// Appends one metric family with a single unlabelled sample.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Appends one metric family with labelled samples: `samples` = (label pairs, value).
pub fn write_labelled(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let rendered: Vec<String> =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
        let _ = writeln!(out, "{name}{{{}}} {value}", rendered.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_samples_are_escaped() {
        let mut out = String::new();
        write_labelled(&mut out, "x_total", "counter", "h", &[(vec![("job", "a\"b".into())], 2.0)]);
        assert!(out.contains("x_total{job=\"a\\\"b\"} 2"), "{out}");
    }
}

//! The agent's configuration reference in README.md ("Configuring the agent"), generated
//! from `reference.yaml` — the file `muster-agent reference-config` prints and the agent's
//! defaults are tested against — so README cannot disagree with it (the operator's
//! `generate` command writes it into README.md; its drift test fails when they differ).

use super::REFERENCE_YAML;

/// A Markdown table of every key in `reference.yaml`: its dotted path, its default and
/// the comment above it.
pub fn markdown() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    // The open sections, by indentation: (indent, name).
    let mut sections: Vec<(usize, String)> = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in REFERENCE_YAML.lines() {
        let text = line.trim_start();
        let indent = line.len() - text.len();
        if let Some(c) = text.strip_prefix('#') {
            comment.push(c.trim());
            continue;
        }
        let Some((key, value)) = text.split_once(':') else {
            // A blank line ends a comment that belongs to no key (the file's header).
            comment.clear();
            continue;
        };
        while sections.last().is_some_and(|(i, _)| *i >= indent) {
            sections.pop();
        }
        let value = value.trim();
        if value.is_empty() {
            sections.push((indent, key.to_owned()));
        } else {
            let mut path: Vec<&str> = sections.iter().map(|(_, s)| s.as_str()).collect();
            path.push(key);
            let meaning = comment.join(" ").replace('|', "\\|");
            out.push_str(&format!(
                "| `{}` | `{}` | {meaning} |\n",
                path.join("."),
                value.replace('|', "\\|")
            ));
        }
        comment.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_row_with_a_meaning() {
        let table = markdown();
        for key in [
            "bootstrap.stable-margin",
            "cluster.failure-detector.threshold",
            "management.token-file",
        ] {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("no row for {key}:\n{table}"));
            assert!(!row.ends_with("|  |"), "{key} has no meaning: {row}");
        }
        let rows = table.lines().count() - 2;
        let without_meaning: Vec<&str> = table.lines().filter(|l| l.ends_with("|  |")).collect();
        assert!(
            without_meaning.is_empty(),
            "keys without a comment: {without_meaning:?}"
        );
        assert!(rows > 40, "{rows} rows");
    }
}

//! Input checks shared by apply (authoritative, deterministic) and the REST layer
//! (early, friendlier refusals).

use xtsync_api::{JobSpec, WorkerRegistration};

use super::CommandError;

/// Longest worker or job name.
pub const NAME_BYTES_MAX: usize = 128;
/// Agents one job may name.
pub const AGENTS_PER_JOB_MAX: usize = 64;
/// Longest catalog path (Linux PATH_MAX).
pub const PATH_BYTES_MAX: usize = 4096;

fn invalid(field: &str, reason: impl Into<String>) -> CommandError {
    CommandError::Invalid { field: field.to_string(), reason: reason.into() }
}

/// Names become key components: letters, digits, `.`, `_`, `-`, at most 128 bytes.
pub fn name(field: &str, value: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > NAME_BYTES_MAX {
        return Err(invalid(field, format!("is {} bytes long; at most {NAME_BYTES_MAX}", value.len())));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(invalid(field, format!("{value:?} contains {c:?}; use letters, digits, '.', '_' and '-'")));
    }
    Ok(())
}

fn absolute_path(field: &str, value: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if !value.starts_with('/') {
        return Err(invalid(field, format!("must be an absolute path, got {value:?}")));
    }
    if value.len() > PATH_BYTES_MAX || value.contains('\0') {
        return Err(invalid(field, "is too long or contains NUL"));
    }
    if value.split('/').any(|c| c == "..") {
        return Err(invalid(field, format!("{value:?} must not contain '..'")));
    }
    Ok(())
}

pub fn job_spec(spec: &JobSpec) -> Result<(), CommandError> {
    name("name", &spec.name)?;
    name("source_worker", &spec.source_worker)?;
    name("target_worker", &spec.target_worker)?;
    absolute_path("source_path", &spec.source_path)?;
    absolute_path("target_path", &spec.target_path)?;
    if spec.agents.len() > AGENTS_PER_JOB_MAX {
        return Err(invalid("agents", format!("names {} agents; at most {AGENTS_PER_JOB_MAX}", spec.agents.len())));
    }
    for agent in &spec.agents {
        name("agents[]", agent)?;
    }
    if !(-7..=22).contains(&spec.options.compression_level) {
        return Err(invalid("options.compression_level", "must be within -7..=22 (zstd levels)"));
    }
    if spec.options.rate_schedule.len() > 48 {
        return Err(invalid("options.rate_schedule", "at most 48 windows"));
    }
    for w in &spec.options.rate_schedule {
        if w.from_minute >= 1440 || w.to_minute > 1440 || w.from_minute == w.to_minute {
            return Err(invalid(
                "options.rate_schedule[]",
                format!("window {}..{} must be minutes of a day (0..1440), not empty", w.from_minute, w.to_minute),
            ));
        }
    }
    Ok(())
}

pub fn registration(reg: &WorkerRegistration) -> Result<(), CommandError> {
    name("name", &reg.name)?;
    if reg.site.len() > NAME_BYTES_MAX {
        return Err(invalid("site", format!("at most {NAME_BYTES_MAX} bytes")));
    }
    for (field, addr) in [("data_addr", &reg.data_addr), ("http_addr", &reg.http_addr)] {
        if addr.is_empty() || addr.len() > 256 || !addr.contains(':') || addr.contains(char::is_whitespace) {
            return Err(invalid(field, format!("{addr:?} is not host:port")));
        }
    }
    Ok(())
}

/// A catalog path is relative to the job root, `/`-separated, and cannot leave the root.
pub fn catalog_path(path: &str) -> Result<(), CommandError> {
    let refuse = |reason: &str| Err(CommandError::InvalidPath { path: path.to_string(), reason: reason.to_string() });
    if path.is_empty() {
        return refuse("empty");
    }
    if path.len() > PATH_BYTES_MAX {
        return refuse("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return refuse("must be relative to the job root");
    }
    if path.contains('\0') {
        return refuse("contains NUL");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return refuse("has an empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_paths_cannot_escape_the_root() {
        assert!(catalog_path("a/b.txt").is_ok());
        for bad in ["", "/etc/passwd", "a/../../x", "a//b", "./a", "a/", "a\0b"] {
            assert!(catalog_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_key_safe() {
        assert!(name("name", "site-a.w1_x").is_ok());
        assert!(name("name", "a/b").is_err());
        assert!(name("name", "").is_err());
        assert!(name("name", &"x".repeat(129)).is_err());
    }
}

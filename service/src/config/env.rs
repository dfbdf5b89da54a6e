//! What the environment changes in a config: `STREAMFIT_*` overrides
//! applied to the TOML before it is read (and named when a value they set
//! is refused), and `~` in paths expanded to `HOME`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A bare TOML value (number, bool, array, inline table), else the text itself.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// `STREAMFIT_*` variables that are not config overrides: the scripts' and
/// the log's own settings (and `STREAMFIT_TEST_*`, the tests' fault
/// injection, and `STREAMFIT_NB_*`, the notebooks' settings). `KAFKA_PORT`
/// moves the local broker (`deploy/kafka.sh`); it is not the librdkafka
/// property `port`.
const NOT_OVERRIDES: [&str; 9] = [
    "CACHE",
    "DATA",
    "KAFKA_PORT",
    "KAFKA_SECURE_PORT",
    "KAFKA_BROKERS",
    "LOAD_TOKEN",
    "LOG",
    "CONFIG",
    "HOME",
];

/// Prefixes of `STREAMFIT_*` variables that belong to the tests and the
/// notebooks.
const NOT_OVERRIDE_PREFIXES: [&str; 2] = ["TEST_", "NB_"];

/// `path` with a leading `~/` read as the home directory.
pub(super) fn expand_home_path(path: &Path, home: Option<&str>) -> Result<std::path::PathBuf> {
    match path.strip_prefix("~") {
        Ok(rest) => {
            let home = home.context("starts with ~/, but HOME is not set; give the full path")?;
            Ok(Path::new(home).join(rest))
        }
        Err(_) => Ok(path.to_path_buf()),
    }
}

/// File paths in `[kafka]` (`ssl.ca.location` and the other `*.location`
/// properties) may start with `~/`, read as the home directory: librdkafka
/// takes paths as they are.
pub(super) fn expand_home(kafka: &mut BTreeMap<String, String>, home: Option<&str>) -> Result<()> {
    for (key, value) in kafka.iter_mut() {
        if !key.ends_with(".location") {
            continue;
        }
        if let Some(rest) = value.strip_prefix("~/") {
            let home = home.with_context(|| {
                format!("`kafka.{key}` starts with ~/, but HOME is not set; give the full path")
            })?;
            *value = format!("{}/{rest}", home.trim_end_matches('/'));
        }
    }
    Ok(())
}

/// A key or value that serde refused, named by its place in the config
/// (`model[4].features[0]`), with the model's name, the feature's field
/// and kind, and the environment variable that set it, if one did:
/// serde's own message ("invalid type: string "x", expected f64") says
/// what is wrong but not where.
pub(super) fn wrong_key(
    root: &toml::Table,
    e: &serde_path_to_error::Error<toml::de::Error>,
    overrides: &[(String, String)],
) -> anyhow::Error {
    let path = e.path().to_string();
    let mut place = format!("`{path}`");
    let mut segments = e.path().iter();
    if let (
        Some(serde_path_to_error::Segment::Map { key }),
        Some(serde_path_to_error::Segment::Seq { index }),
    ) = (segments.next(), segments.next())
    {
        let model = root
            .get(key.as_str())
            .and_then(|m| m.as_array())
            .and_then(|m| m.get(*index))
            .and_then(|m| m.as_table());
        if let Some(name) = model.and_then(|m| m.get("name")).and_then(|n| n.as_str()) {
            place.push_str(&format!(" (model `{name}`"));
            let feature = match (segments.next(), segments.next()) {
                (
                    Some(serde_path_to_error::Segment::Map { key }),
                    Some(serde_path_to_error::Segment::Seq { index }),
                ) if key == "features" => model
                    .and_then(|m| m.get("features"))
                    .and_then(|f| f.as_array())
                    .and_then(|f| f.get(*index))
                    .and_then(|f| f.as_table()),
                _ => None,
            };
            let text =
                |t: &toml::Table, k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            if let Some(f) = feature {
                match (text(f, "kind"), text(f, "field")) {
                    (Some(kind), Some(field)) => {
                        place.push_str(&format!(", its `{kind}` feature of `{field}`"))
                    }
                    (None, Some(field)) => place.push_str(&format!(", its feature of `{field}`")),
                    _ => {}
                }
            }
            place.push(')');
        }
    }
    let by = overrides.iter().find(|(prefix, _)| {
        path.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    });
    if let Some((_, var)) = by {
        place.push_str(&format!(", set by the environment variable {var}"));
    }
    anyhow::anyhow!("{place}: {}", e.inner().message().trim())
}

/// Applies the `STREAMFIT_*` overrides in `env` to `root`; gives each
/// override's place in the config (`model[4].features`, as serde's paths
/// name it) and its variable.
pub(super) fn apply_env(
    root: &mut toml::Table,
    env: impl Iterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> =
        env.filter(|(k, _)| k.starts_with("STREAMFIT_")).collect();
    vars.sort();
    let mut applied = Vec::new();
    for (name, raw) in vars {
        let rest = &name["STREAMFIT_".len()..];
        if NOT_OVERRIDES.contains(&rest)
            || NOT_OVERRIDE_PREFIXES.iter().any(|p| rest.starts_with(p))
        {
            // the scripts' own settings (the local broker's port, ...)
            continue;
        }
        if let Some(prop) = rest.strip_prefix("KAFKA_") {
            let key = prop.to_ascii_lowercase().replace('_', ".");
            applied.push((format!("kafka.{key}"), name.clone()));
            table(root, "kafka").insert(key, toml::Value::String(raw));
        } else if let Some((section, key)) = ["SERVICE_", "HTTP_", "TOPICS_"]
            .iter()
            .find_map(|p| rest.strip_prefix(p).map(|key| (&p[..p.len() - 1], key)))
        {
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            applied.push((format!("{section}.{key}"), name.clone()));
            table(root, &section).insert(key, env_value(&raw));
        } else if let Some(spec) = rest.strip_prefix("MODEL_") {
            let (model, key) = spec.split_once("__").with_context(|| {
                format!(
                    "environment variable {name} should look like STREAMFIT_MODEL_<NAME>__<KEY>"
                )
            })?;
            let models = root
                .get_mut("model")
                .and_then(|m| m.as_array_mut())
                .with_context(|| {
                    format!("environment variable {name} names a model, but the config has none")
                })?;
            let (index, target) = models
                .iter_mut()
                .enumerate()
                .filter_map(|(i, m)| m.as_table_mut().map(|m| (i, m)))
                .find(|(_, m)| {
                    m.get("name")
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| n.to_ascii_uppercase().replace('-', "_") == model)
                })
                .with_context(|| {
                    format!("environment variable {name}: no model is named {model}")
                })?;
            let key = key.to_ascii_lowercase();
            applied.push((format!("model[{index}].{key}"), name.clone()));
            target.insert(key, env_value(&raw));
        } else {
            bail!("environment variable {name} is not a config override; see the configuration reference in the README");
        }
    }
    Ok(applied)
}

fn table<'a>(root: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    let entry = root
        .entry(name.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    match entry {
        toml::Value::Table(t) => t,
        _ => unreachable!("replaced by a table just above"),
    }
}

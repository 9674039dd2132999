//! The service mapping: which tasks go into which target groups, on which port.
//!
//! The mapping is a JSON document read once at start-up, from the `REGISTRAR_CONFIG`
//! environment variable or from the file named by `REGISTRAR_CONFIG_FILE`. It is validated in
//! full before the function takes its first event, and every problem is reported with the key
//! path and the bad value, so a broken deployment fails its init phase instead of an invocation.
//!
//! ```json
//! {
//!   "services": [
//!     {
//!       "name": "auth",
//!       "cluster": "authapi-cluster",
//!       "family": "auth",
//!       "container": "auth",
//!       "containerPort": 8080,
//!       "targetGroups": ["unified-auth-tg"]
//!     }
//!   ]
//! }
//! ```
//!
//! A task may match several entries: give a second entry (with its own name) for a second
//! container, port or set of target groups.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::health::HealthSettings;
use crate::task::{Arn, Task, cluster_name};

/// Environment variable holding the mapping as a JSON document.
pub const CONFIG_ENV: &str = "REGISTRAR_CONFIG";
/// Environment variable holding the path of a file with the mapping.
pub const CONFIG_FILE_ENV: &str = "REGISTRAR_CONFIG_FILE";

const TOP_LEVEL_KEYS: &[&str] = &["services", "exclusiveTargetGroups", "maxRemovalPercent"];
/// The default share of a target group's targets one sweep may remove.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u8 = 50;
const SERVICE_KEYS: &[&str] = &[
    "name",
    "cluster",
    "family",
    "group",
    "container",
    "containerPort",
    "targetGroups",
];

/// The validated service mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The mapped services, in document order.
    pub services: Vec<ServiceMapping>,
    /// Target groups that hold only this registrar's targets: a sweep removes any target in
    /// them that no running mapped task accounts for. In the other groups it removes only
    /// targets it can attribute to a stopped task of a mapped service.
    pub exclusive_target_groups: Vec<TargetGroupRef>,
    /// The share of a group's targets, in percent, that one sweep may remove; the rest is
    /// held back and reported, so a bad mapping or a partial listing cannot empty a group.
    pub max_removal_percent: u8,
}

/// One entry of the mapping: tasks it recognises and where their container port goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMapping {
    /// A unique name, used in logs and summaries.
    pub name: String,
    /// The cluster the tasks run in.
    pub cluster: ClusterRef,
    /// Task definition family the task must belong to, when set.
    pub family: Option<String>,
    /// Exact task group (`service:NAME`, `family:NAME` or custom) the task must have, when set.
    pub group: Option<String>,
    /// The container whose port is registered.
    pub container: String,
    /// The port the container listens on.
    pub container_port: u16,
    /// The target groups the task's address is registered in.
    pub target_groups: Vec<TargetGroupRef>,
}

/// A cluster given by name or by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRef {
    /// A bare cluster name, matched in the function's own region.
    Name(String),
    /// A full cluster ARN, matched exactly.
    Arn(String),
}

/// A target group given by name or by ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetGroupRef {
    /// A target group name, looked up once with DescribeTargetGroups.
    Name(String),
    /// A target group ARN, used as it is.
    Arn(String),
}

impl fmt::Display for TargetGroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetGroupRef::Name(name) => f.write_str(name),
            TargetGroupRef::Arn(arn) => f.write_str(arn),
        }
    }
}

impl ClusterRef {
    /// Returns the value to pass to ECS calls as `cluster`.
    pub fn as_str(&self) -> &str {
        match self {
            ClusterRef::Name(name) | ClusterRef::Arn(name) => name,
        }
    }

    /// Returns whether a task's cluster ARN is this cluster. A name matches only in `region` (the
    /// function's region, when known), so that an event from another region is not taken for
    /// a cluster of the same name here.
    pub fn matches(&self, cluster_arn: &str, region: Option<&str>) -> bool {
        match self {
            ClusterRef::Arn(arn) => arn == cluster_arn,
            ClusterRef::Name(name) => {
                let Some(arn) = Arn::parse(cluster_arn) else {
                    return false;
                };
                cluster_name(cluster_arn) == name
                    && region.is_none_or(|region| arn.region == region)
            }
        }
    }
}

impl ServiceMapping {
    /// Returns whether a task belongs to this entry: same cluster, and the family and group match
    /// where they are set.
    pub fn matches(&self, task: &Task, region: Option<&str>) -> bool {
        self.cluster.matches(&task.cluster_arn, region)
            && self
                .family
                .as_deref()
                .is_none_or(|family| task.family() == Some(family))
            && self
                .group
                .as_deref()
                .is_none_or(|group| task.group.as_deref() == Some(group))
    }
}

impl Config {
    /// Returns the entries a task matches, in document order.
    pub fn matching<'a>(&'a self, task: &Task, region: Option<&str>) -> Vec<&'a ServiceMapping> {
        self.services
            .iter()
            .filter(|service| service.matches(task, region))
            .collect()
    }

    /// Reads the mapping from the environment through `lookup`: `REGISTRAR_CONFIG` holds the
    /// document, or `REGISTRAR_CONFIG_FILE` names a file with it.
    ///
    /// # Errors
    ///
    /// When neither or both variables are set, the file cannot be read, or the document is
    /// invalid.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let inline = lookup(CONFIG_ENV).filter(|value| !value.trim().is_empty());
        let file = lookup(CONFIG_FILE_ENV).filter(|value| !value.trim().is_empty());
        match (inline, file) {
            (Some(document), None) => Self::from_json(&document),
            (None, Some(path)) => Self::from_file(&path),
            (Some(_), Some(_)) => Err(ConfigError::single(format!(
                "both {CONFIG_ENV} and {CONFIG_FILE_ENV} are set; set only one of them"
            ))),
            (None, None) => Err(ConfigError::single(format!(
                "no service mapping: set {CONFIG_ENV} to the JSON document or \
                 {CONFIG_FILE_ENV} to the path of a file holding it"
            ))),
        }
    }

    /// Reads the mapping from the process environment.
    ///
    /// # Errors
    ///
    /// As [`Config::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the mapping from a JSON file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or its document is invalid.
    pub fn from_file(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::single(format!("cannot read service mapping file {path:?}: {err}"))
        })?;
        Self::from_json(&text)
    }

    /// Parses and validates a mapping document.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] listing every problem found, each with its key path and value.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let document: Value = serde_json::from_str(text).map_err(|err| {
            ConfigError::single(format!("service mapping is not valid JSON: {err}"))
        })?;
        // JSON parsers keep the last of two equal keys, so a second value would be used
        // without a word; each one is reported instead.
        let duplicates = duplicate_keys(text);
        match Self::from_value(&document) {
            Ok(config) if duplicates.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError {
                problems: duplicates,
            }),
            Err(mut err) => {
                err.problems.splice(0..0, duplicates);
                Err(err)
            }
        }
    }

    /// Validates a mapping document that is already parsed as JSON.
    ///
    /// # Errors
    ///
    /// As [`Config::from_json`].
    pub fn from_value(document: &Value) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let Some(top) = document.as_object() else {
            return Err(ConfigError::single(format!(
                "service mapping must be a JSON object with a \"services\" list, got {document}"
            )));
        };
        unknown_keys(top, TOP_LEVEL_KEYS, "", &mut problems);

        let services = match top.get("services") {
            Some(Value::Array(entries)) if !entries.is_empty() => entries,
            Some(Value::Array(_)) => {
                problems.push("services: the list is empty; map at least one service".into());
                return Err(ConfigError { problems });
            }
            Some(other) => {
                problems.push(format!(
                    "services: expected a list of services, got {other}"
                ));
                return Err(ConfigError { problems });
            }
            None => {
                problems.push("services: missing; add a list of services".into());
                return Err(ConfigError { problems });
            }
        };

        let mut mappings = Vec::new();
        let mut positions = Vec::new();
        let mut names = HashSet::new();
        for (index, entry) in services.iter().enumerate() {
            let path = format!("services[{index}]");
            if let Some(mapping) = parse_service(entry, &path, &mut problems) {
                if !names.insert(mapping.name.clone()) {
                    problems.push(format!(
                        "{path}.name: {:?} is used by an earlier service; names must be unique",
                        mapping.name
                    ));
                }
                mappings.push(mapping);
                positions.push(index);
            }
        }
        duplicate_targets(&mappings, &positions, &mut problems);

        let exclusive_target_groups =
            parse_exclusive_groups(top.get("exclusiveTargetGroups"), &mappings, &mut problems);
        let max_removal_percent = match top.get("maxRemovalPercent") {
            None => DEFAULT_MAX_REMOVAL_PERCENT,
            Some(value) => match value.as_u64().and_then(|v| u8::try_from(v).ok()) {
                Some(percent) if (1..=100).contains(&percent) => percent,
                _ => {
                    problems.push(format!(
                        "maxRemovalPercent: {value} is invalid; use a whole number from 1 to 100"
                    ));
                    DEFAULT_MAX_REMOVAL_PERCENT
                }
            },
        };

        if problems.is_empty() {
            Ok(Config {
                services: mappings,
                exclusive_target_groups,
                max_removal_percent,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Reads everything the function is configured with: the service mapping and the health-wait
/// settings (see [`HealthSettings::from_lookup`]).
///
/// # Errors
///
/// One [`ConfigError`] listing the problems of both, so one deployment shows them all.
pub fn load(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(Config, HealthSettings), ConfigError> {
    let mapping = Config::from_lookup(&lookup);
    let health = HealthSettings::from_lookup(&lookup);
    let metrics = metrics_namespace(&lookup);
    match (mapping, health, metrics) {
        (Ok(mapping), Ok(health), Ok(_)) => Ok((mapping, health)),
        (mapping, health, metrics) => {
            let mut problems = mapping.err().map(|err| err.problems).unwrap_or_default();
            problems.extend(health.err().unwrap_or_default());
            problems.extend(metrics.err());
            Err(ConfigError { problems })
        }
    }
}

/// Environment variable naming the CloudWatch namespace of the function's metrics.
pub const METRICS_NAMESPACE_ENV: &str = "REGISTRAR_METRICS_NAMESPACE";

/// Reads the metrics namespace: [`crate::metrics::DEFAULT_NAMESPACE`] when the variable is
/// unset, `None` (no metrics) when it is set but empty.
///
/// # Errors
///
/// A message naming the variable, its value and the CloudWatch rule it breaks.
pub fn metrics_namespace(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match lookup(METRICS_NAMESPACE_ENV) {
        None => Ok(Some(crate::metrics::DEFAULT_NAMESPACE.to_owned())),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => crate::metrics::validate_namespace(&value)
            .map(|()| Some(value))
            .map_err(|problem| {
                format!("{METRICS_NAMESPACE_ENV}: {problem}; set it empty to turn metrics off")
            }),
    }
}

/// Lists every key that appears more than once in one object of a JSON document, by path.
fn duplicate_keys(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut reader = serde_json::Deserializer::from_str(text);
    let scan = DuplicateScan {
        path: String::new(),
        found: &mut found,
    };
    // The caller parsed the text as JSON first, so a syntax error here is not expected; the
    // scan then reports no duplicates and the parse error stands on its own.
    if serde::de::DeserializeSeed::deserialize(scan, &mut reader).is_err() {
        return Vec::new();
    }
    found
}

/// One step of [`duplicate_keys`]: the value at `path`.
struct DuplicateScan<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateScan<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<(), D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateScan<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let item = DuplicateScan {
                path: format!("{}[{index}]", self.path),
                found: &mut *self.found,
            };
            if items.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push(format!(
                    "{path}: duplicate key; JSON keeps only the last value, so remove the others"
                ));
            }
            let value = DuplicateScan {
                path,
                found: &mut *self.found,
            };
            entries.next_value_seed(value)?;
        }
        Ok(())
    }
}

/// Every problem found in the configuration, one message each.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One message per problem, each naming the key path and the value.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn single(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

// `main` returns this error, and Rust prints a returned error with `Debug`: show the same
// readable list as `Display`.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ConfigError {}

fn unknown_keys(
    object: &Map<String, Value>,
    known: &[&str],
    path: &str,
    problems: &mut Vec<String>,
) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            problems.push(format!(
                "{at}: unknown key; expected one of {}",
                known.join(", ")
            ));
        }
    }
}

fn parse_service(entry: &Value, path: &str, problems: &mut Vec<String>) -> Option<ServiceMapping> {
    let Some(object) = entry.as_object() else {
        problems.push(format!("{path}: expected an object, got {entry}"));
        return None;
    };
    unknown_keys(object, SERVICE_KEYS, path, problems);
    let before = problems.len();

    let name = required_string(object, "name", path, problems);
    if let Some(name) = &name {
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            problems.push(format!(
                "{path}.name: {name:?} may only contain letters, digits, '-' and '_'"
            ));
        }
    }
    let cluster = required_string(object, "cluster", path, problems)
        .and_then(|value| parse_cluster(&value, &format!("{path}.cluster"), problems));
    let family = optional_string(object, "family", path, problems);
    if let Some(family) = &family {
        let valid = family.len() <= 255
            && family
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            problems.push(format!(
                "{path}.family: {family:?} is not a task definition family (up to 255 letters, \
                 digits, '-' and '_', without a revision)"
            ));
        }
    }
    let group = optional_string(object, "group", path, problems);
    let recognisable = family.is_some() || group.is_some();
    if !recognisable && !object.contains_key("family") && !object.contains_key("group") {
        problems.push(format!(
            "{path}: set \"family\", \"group\" or both, so that the service's tasks can be recognised"
        ));
    }
    let container = required_string(object, "container", path, problems);
    let container_port = parse_port(object.get("containerPort"), path, problems);
    let target_groups = parse_target_groups(object.get("targetGroups"), path, problems);

    if problems.len() > before {
        return None;
    }
    Some(ServiceMapping {
        name: name?,
        cluster: cluster?,
        family,
        group,
        container: container?,
        container_port: container_port?,
        target_groups: target_groups?,
    })
}

fn required_string(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match object.get(key) {
        None => {
            problems.push(format!("{path}.{key}: missing"));
            None
        }
        Some(value) => string_value(value, key, path, problems),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    object
        .get(key)
        .and_then(|value| string_value(value, key, path, problems))
}

fn string_value(
    value: &Value,
    key: &str,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match value.as_str() {
        Some(text) if text.trim().is_empty() => {
            problems.push(format!("{path}.{key}: must not be empty"));
            None
        }
        // ECS never pads names, so a padded value could never match.
        Some(text) if text.trim() != text => {
            problems.push(format!(
                "{path}.{key}: {text:?} has leading or trailing spaces; remove them"
            ));
            None
        }
        Some(text) => Some(text.to_owned()),
        None => {
            problems.push(format!("{path}.{key}: expected a string, got {value}"));
            None
        }
    }
}

fn parse_cluster(value: &str, path: &str, problems: &mut Vec<String>) -> Option<ClusterRef> {
    if value.starts_with("arn:") {
        let valid = Arn::parse(value).is_some_and(|arn| {
            is_partition(arn.partition)
                && arn.service == "ecs"
                && !arn.region.is_empty()
                && is_account(arn.account)
                && arn
                    .resource
                    .strip_prefix("cluster/")
                    .is_some_and(is_cluster_name)
        });
        if valid {
            return Some(ClusterRef::Arn(value.to_owned()));
        }
        problems.push(format!(
            "{path}: {value:?} is not a cluster ARN \
             (arn:aws:ecs:REGION:ACCOUNT:cluster/NAME); give the ARN or the bare name"
        ));
        return None;
    }
    if is_cluster_name(value) {
        Some(ClusterRef::Name(value.to_owned()))
    } else {
        problems.push(format!(
            "{path}: {value:?} is not a cluster name (up to 255 letters, digits, '-' and '_')"
        ));
        None
    }
}

fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_partition(partition: &str) -> bool {
    partition == "aws" || partition.starts_with("aws-")
}

fn is_account(account: &str) -> bool {
    account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())
}

fn parse_port(value: Option<&Value>, path: &str, problems: &mut Vec<String>) -> Option<u16> {
    let key = format!("{path}.containerPort");
    let Some(value) = value else {
        problems.push(format!("{key}: missing"));
        return None;
    };
    match value.as_i64() {
        Some(port) if (1..=65535).contains(&port) => u16::try_from(port).ok(),
        Some(port) => {
            problems.push(format!(
                "{key}: {port} is out of range; use a port from 1 to 65535"
            ));
            None
        }
        None => {
            problems.push(format!(
                "{key}: expected a whole number from 1 to 65535, got {value}"
            ));
            None
        }
    }
}

fn parse_target_groups(
    value: Option<&Value>,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<TargetGroupRef>> {
    let key = format!("{path}.targetGroups");
    let entries = match value {
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        Some(Value::Array(_)) => {
            problems.push(format!(
                "{key}: the list is empty; name at least one target group"
            ));
            return None;
        }
        Some(other) => {
            problems.push(format!(
                "{key}: expected a list of target group ARNs or names, got {other}"
            ));
            return None;
        }
        None => {
            problems.push(format!("{key}: missing"));
            return None;
        }
    };
    let before = problems.len();
    let mut groups = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = format!("{key}[{index}]");
        match entry.as_str() {
            Some(text) => match parse_target_group(text) {
                Some(group) if groups.contains(&group) => {
                    problems.push(format!("{at}: {text:?} is listed twice"));
                }
                Some(group) => groups.push(group),
                None => problems.push(format!(
                    "{at}: {text:?} is neither a target group ARN \
                     (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID) nor a \
                     target group name (1 to 32 letters, digits and '-', not at either end)"
                )),
            },
            None => problems.push(format!("{at}: expected a string, got {entry}")),
        }
    }
    (problems.len() == before).then_some(groups)
}

/// Reports each entry that recognises the same tasks as an earlier entry (same cluster, family
/// and group) and sends the same port to a target group the earlier one names too. Both would
/// register one target, and a change to one entry would silently be undone by the other.
/// `positions` holds each mapping's index in the document.
fn duplicate_targets(mappings: &[ServiceMapping], positions: &[usize], problems: &mut Vec<String>) {
    for (later, mapping) in mappings.iter().enumerate() {
        // An entry that repeats an earlier name is reported for its name already.
        let earlier = mappings[..later].iter().zip(positions).find(|(other, _)| {
            other.name != mapping.name
                && other.cluster == mapping.cluster
                && other.family == mapping.family
                && other.group == mapping.group
                && other.container_port == mapping.container_port
                && other
                    .target_groups
                    .iter()
                    .any(|group| mapping.target_groups.contains(group))
        });
        if let Some((other, position)) = earlier {
            problems.push(format!(
                "services[{}]: {:?} maps the same tasks and port {} into the same target group                  as services[{position}] ({:?}); merge the two entries or remove one",
                positions[later], mapping.name, mapping.container_port, other.name
            ));
        }
    }
}

fn parse_exclusive_groups(
    value: Option<&Value>,
    services: &[ServiceMapping],
    problems: &mut Vec<String>,
) -> Vec<TargetGroupRef> {
    let Some(value) = value else {
        return Vec::new();
    };
    let Some(entries) = value.as_array() else {
        problems.push(format!(
            "exclusiveTargetGroups: expected a list of target group ARNs or names, got {value}"
        ));
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = format!("exclusiveTargetGroups[{index}]");
        let Some(group) = entry.as_str().and_then(parse_target_group) else {
            problems.push(format!("{at}: {entry} is not a target group ARN or name"));
            continue;
        };
        let mapped = services.iter().any(|s| s.target_groups.contains(&group));
        if mapped {
            groups.push(group);
        } else {
            problems.push(format!(
                "{at}: {group} is in no service's \"targetGroups\"; name it exactly as a service does"
            ));
        }
    }
    groups
}

fn parse_target_group(text: &str) -> Option<TargetGroupRef> {
    if text.starts_with("arn:") {
        let arn = Arn::parse(text)?;
        let mut resource = arn.resource.splitn(3, '/');
        let valid = is_partition(arn.partition)
            && arn.service == "elasticloadbalancing"
            && !arn.region.is_empty()
            && is_account(arn.account)
            && resource.next() == Some("targetgroup")
            && resource.next().is_some_and(is_target_group_name)
            && resource
                .next()
                .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()));
        return valid.then(|| TargetGroupRef::Arn(text.to_owned()));
    }
    is_target_group_name(text).then(|| TargetGroupRef::Name(text.to_owned()))
}

fn is_target_group_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TG_ARN: &str = "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/unified-auth-tg/50dc6c495c0c9188";

    fn auth() -> Value {
        json!({
            "name": "auth",
            "cluster": "authapi-cluster",
            "family": "auth",
            "container": "auth",
            "containerPort": 8080,
            "targetGroups": [TG_ARN, "unified-auth-admin-tg"]
        })
    }

    fn errors_of(document: Value) -> Vec<String> {
        Config::from_value(&document)
            .expect_err("should be rejected")
            .problems
    }

    #[test]
    fn example_document_parses() {
        let config = Config::from_value(&json!({"services": [auth()]})).expect("valid");
        let auth = &config.services[0];
        assert_eq!(auth.cluster, ClusterRef::Name("authapi-cluster".into()));
        assert_eq!(auth.container_port, 8080);
        assert_eq!(auth.target_groups[0], TargetGroupRef::Arn(TG_ARN.into()));
        assert_eq!(
            auth.target_groups[1],
            TargetGroupRef::Name("unified-auth-admin-tg".into())
        );
    }

    #[test]
    fn shipped_example_file_parses() {
        let path = format!(
            "{}/config/services.example.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let config = Config::from_file(&path).expect("the documented example must be valid");
        let names: Vec<_> = config.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["auth", "pdf", "fa", "users", "batch"]);
        let ports: Vec<_> = config.services.iter().map(|s| s.container_port).collect();
        assert_eq!(ports, [8080, 9080, 2531, 8080, 8080]);
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = errors_of(json!({
            "services": [
                {"name": "a b", "cluster": "arn:aws:ecs:us-east-1:1:cluster/x",
                 "container": "", "containerPort": 70000, "targetGroups": ["-bad-"], "colour": 1},
                auth(),
                auth()
            ],
            "extra": true
        }));
        let expected = [
            "extra: unknown key",
            "services[0].colour: unknown key",
            "services[0].name: \"a b\"",
            "services[0].cluster: \"arn:aws:ecs:us-east-1:1:cluster/x\" is not a cluster ARN",
            "services[0]: set \"family\", \"group\" or both",
            "services[0].container: must not be empty",
            "services[0].containerPort: 70000 is out of range",
            "services[0].targetGroups[0]: \"-bad-\"",
            "services[2].name: \"auth\" is used by an earlier service",
        ];
        for fragment in expected {
            assert!(
                problems.iter().any(|p| p.contains(fragment)),
                "no problem mentions {fragment:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn duplicate_services_are_rejected() {
        let mut copy = auth();
        copy["name"] = json!("auth-copy");
        copy["targetGroups"] = json!(["unified-auth-admin-tg"]);
        let mut other_port = auth();
        other_port["name"] = json!("auth-admin");
        other_port["containerPort"] = json!(9090);
        let problems = errors_of(json!({"services": [auth(), other_port, copy]}));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("services[2]: \"auth-copy\" maps the same tasks and port 8080"),
            "{problems:#?}"
        );
        assert!(
            problems[0].contains("services[0] (\"auth\")"),
            "{problems:#?}"
        );
    }

    #[test]
    fn unknown_keys_are_each_named() {
        let mut entry = auth();
        entry["port"] = json!(8080);
        entry["targetGroup"] = json!("x");
        let problems = errors_of(json!({"services": [entry], "service": []}));
        let expected = [
            "service: unknown key",
            "services[0].port: unknown key",
            "services[0].targetGroup: unknown key",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for fragment in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(fragment)),
                "no problem starts with {fragment:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn bad_arns_and_ports_are_each_named() {
        let mut entry = auth();
        entry["cluster"] = json!("arn:aws:ecs:us-east-1:123456789012:service/web");
        entry["targetGroups"] = json!([
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/0123",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/not-hex"
        ]);
        entry["containerPort"] = json!(-1);
        let problems = errors_of(json!({"services": [entry]}));
        let expected = [
            "services[0].cluster:",
            "services[0].targetGroups[0]:",
            "services[0].targetGroups[1]:",
            "services[0].containerPort: -1 is out of range",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for fragment in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(fragment)),
                "no problem starts with {fragment:?} in {problems:#?}"
            );
        }
        for port in [json!(65536), json!(80.5), json!("80")] {
            let mut entry = auth();
            entry["containerPort"] = port.clone();
            let problems = errors_of(json!({"services": [entry]}));
            assert_eq!(problems.len(), 1, "{port}: {problems:#?}");
            assert!(
                problems[0].starts_with("services[0].containerPort"),
                "{problems:#?}"
            );
        }
    }

    #[test]
    fn padded_names_and_bad_partitions_are_rejected() {
        let mut padded = auth();
        padded["group"] = json!(" service:auth ");
        padded["container"] = json!("auth ");
        let problems = errors_of(json!({"services": [padded]}));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("leading or trailing spaces"),
            "{problems:?}"
        );
        let mut partition = auth();
        partition["cluster"] = json!("arn:bogus:ecs:us-east-1:123456789012:cluster/web");
        assert!(errors_of(json!({"services": [partition]}))[0].contains("is not a cluster ARN"));
    }

    #[test]
    fn sweep_keys_are_read_and_checked() {
        let config = Config::from_value(&json!({
            "services": [auth()], "exclusiveTargetGroups": ["unified-auth-admin-tg"], "maxRemovalPercent": 25
        }))
        .expect("valid");
        assert_eq!(
            config.exclusive_target_groups,
            [TargetGroupRef::Name("unified-auth-admin-tg".into())]
        );
        assert_eq!(config.max_removal_percent, 25);
        let default = Config::from_value(&json!({"services": [auth()]})).expect("valid");
        assert_eq!(default.max_removal_percent, DEFAULT_MAX_REMOVAL_PERCENT);
        let problems = errors_of(json!({
            "services": [auth()], "exclusiveTargetGroups": ["other-tg"], "maxRemovalPercent": 0
        }));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("other-tg is in no service"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("maxRemovalPercent: 0 is invalid"),
            "{problems:?}"
        );
    }

    #[test]
    fn port_zero_and_text_ports_are_rejected() {
        let mut zero = auth();
        zero["containerPort"] = json!(0);
        assert!(errors_of(json!({"services": [zero]}))[0].contains("0 is out of range"));
        let mut text = auth();
        text["containerPort"] = json!("8080");
        assert!(errors_of(json!({"services": [text]}))[0].contains("expected a whole number"));
    }

    #[test]
    fn missing_and_empty_services_are_named() {
        assert!(errors_of(json!({}))[0].contains("services: missing"));
        assert!(errors_of(json!({"services": []}))[0].contains("the list is empty"));
        assert!(errors_of(json!([]))[0].contains("must be a JSON object"));
    }

    #[test]
    fn malformed_target_group_arn_is_rejected() {
        let mut entry = auth();
        entry["targetGroups"] =
            json!(["arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/x/1"]);
        let problems = errors_of(json!({"services": [entry]}));
        assert!(
            problems[0].contains("neither a target group ARN"),
            "{problems:?}"
        );
    }

    #[test]
    fn duplicate_target_group_is_rejected() {
        let mut entry = auth();
        entry["targetGroups"] = json!(["tg-a", "tg-a"]);
        assert!(errors_of(json!({"services": [entry]}))[0].contains("listed twice"));
    }

    #[test]
    fn invalid_json_is_named() {
        let err = Config::from_json("{services: []").expect_err("invalid");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn lookup_needs_exactly_one_source() {
        let none = Config::from_lookup(|_| None).expect_err("nothing set");
        assert!(none.to_string().contains(CONFIG_ENV), "{none}");
        let both = Config::from_lookup(|_| Some("x".into())).expect_err("both set");
        assert!(both.to_string().contains("set only one"), "{both}");
        let document = json!({"services": [auth()]}).to_string();
        let inline = Config::from_lookup(|name| (name == CONFIG_ENV).then(|| document.clone()));
        assert!(inline.is_ok(), "{inline:?}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::from_file("/nonexistent/mapping.json").expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/mapping.json"),
            "{err}"
        );
    }

    #[test]
    fn cluster_name_matches_only_in_own_region() {
        let cluster = ClusterRef::Name("web".into());
        let arn = "arn:aws:ecs:us-east-1:123456789012:cluster/web";
        assert!(cluster.matches(arn, Some("us-east-1")));
        assert!(cluster.matches(arn, None));
        assert!(!cluster.matches(arn, Some("eu-west-1")));
        assert!(!cluster.matches("arn:aws:ecs:us-east-1:123456789012:cluster/webx", None));
    }

    #[test]
    fn cluster_arn_matches_exactly() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:cluster/web";
        let cluster = ClusterRef::Arn(arn.into());
        assert!(cluster.matches(arn, Some("eu-west-1")));
        assert!(!cluster.matches("arn:aws:ecs:us-east-1:210987654321:cluster/web", None));
    }

    #[test]
    fn family_and_group_must_both_match_when_set() {
        let mut entry = auth();
        entry["group"] = json!("family:auth");
        let config = Config::from_value(&json!({"services": [entry]})).expect("valid");
        let mut task = Task {
            cluster_arn: "arn:aws:ecs:us-east-2:123456789012:cluster/authapi-cluster".into(),
            task_definition_arn: Some(
                "arn:aws:ecs:us-east-2:123456789012:task-definition/auth:7".into(),
            ),
            group: Some("family:auth".into()),
            ..Task::default()
        };
        assert_eq!(config.matching(&task, Some("us-east-2")).len(), 1);
        task.group = Some("service:auth".into());
        assert!(config.matching(&task, Some("us-east-2")).is_empty());
        task.group = Some("family:auth".into());
        task.task_definition_arn =
            Some("arn:aws:ecs:us-east-2:123456789012:task-definition/authx:7".into());
        assert!(config.matching(&task, Some("us-east-2")).is_empty());
    }
}

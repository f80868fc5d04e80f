//! Network description files (TOML): one or more nodes, each a firmware
//! [`NodeConfig`] plus a name. Every error names the file,
//! the line and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use iipnic_firmware::{ConfigError, NativePolicy, Node, NodeConfig, NodeLimits, PolicyEngine};
use serde::Deserialize;

/// A node as written in the file.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    /// Name used in reports and by `iipnic ctl`.
    pub name: String,
    /// Everything the firmware needs.
    #[serde(flatten)]
    pub config: NodeConfig,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// The nodes.
    pub nodes: Vec<NodeEntry>,
    /// Table sizes, shared by every node.
    #[serde(default)]
    pub limits: NodeLimits,
}

/// A configuration error located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Path of the field, e.g. `nodes[0].sas[1].key`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// A parsed file that still knows its text, so later validation errors find their line.
#[derive(Debug, Clone)]
pub struct Network {
    /// Where it came from.
    pub path: PathBuf,
    text: String,
    /// What it says.
    pub file: NetworkFile,
}

/// Reads a configuration file; the error names the file.
pub fn read_file(path: &Path) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        message: e.to_string(),
    })
}

/// Parses TOML text read from `path`; syntax and type errors name the file and the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|e| ConfigFileError {
        file: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        field: String::new(),
        message: e.message().trim().to_string(),
    })
}

impl Network {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        Self::parse(path, read_file(path)?)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigFileError> {
        let file: NetworkFile = parse_toml(path, &text)?;
        let network = Network {
            path: path.to_path_buf(),
            text,
            file,
        };
        network.check_names()?;
        Ok(network)
    }

    fn check_names(&self) -> Result<(), ConfigFileError> {
        let nodes = &self.file.nodes;
        if nodes.is_empty() {
            return Err(self.error("nodes", "the file describes no node"));
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|n| n.name == node.name) {
                return Err(self.error(&format!("nodes[{i}].name"), "duplicate node name"));
            }
            for addr in &node.config.settings.underlay {
                if nodes[..i]
                    .iter()
                    .any(|n| n.config.settings.underlay.contains(addr))
                {
                    return Err(self.error(
                        &format!("nodes[{i}].underlay"),
                        &format!("{addr} already belongs to another node"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds every node with the native policy engine.
    pub fn build_nodes(&self, now_ms: u64) -> Result<Vec<Node<NativePolicy>>, ConfigFileError> {
        self.build_nodes_with(now_ms, |_| Ok(NativePolicy))
    }

    /// Builds every node with the policy engine `make` returns for it (by index).
    pub fn build_nodes_with<P: PolicyEngine>(
        &self,
        now_ms: u64,
        mut make: impl FnMut(usize) -> Result<P, String>,
    ) -> Result<Vec<Node<P>>, ConfigFileError> {
        self.file
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let policy = make(i).map_err(|e| self.error(&format!("nodes[{i}]"), &e))?;
                Node::new(&n.config, policy, self.file.limits, now_ms)
                    .map_err(|e| self.located(e.within(&format!("nodes[{i}]"))))
            })
            .collect()
    }

    /// Turns a firmware validation error into one that names file and line.
    pub fn located(&self, error: ConfigError) -> ConfigFileError {
        self.error(&error.field, &error.message)
    }

    fn error(&self, field: &str, message: &str) -> ConfigFileError {
        ConfigFileError {
            file: self.path.clone(),
            line: span_of(&self.text, field).map(|at| line_of(&self.text, at)),
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

/// Finds where the value at `path` (`nodes[0].sas[1].key`) starts; falls back to the
/// deepest ancestor that exists.
fn span_of(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut best = None;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
        best = Some(value.span().start);
        let value = match (value.get_ref(), index) {
            (DeValue::Array(items), Some(i)) => match items.get(i) {
                Some(item) => {
                    best = Some(item.span().start);
                    item.get_ref()
                }
                None => return best,
            },
            (v, _) => v,
        };
        match value {
            DeValue::Table(t) if segments.peek().is_some() => table = t,
            _ => return best,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[nodes]]
name = "a"
underlay = ["192.0.2.1"]

[[nodes.sas]]
id = 1
direction = "outbound"
spi = 0x1001
key = "000102030405060708090a0b0c0d0e0fa0a1a2a3"
src = "192.0.2.1"
dst = "192.0.2.2"

[[nodes.sas]]
id = 2
direction = "inbound"
spi = 0x2002
key = "0001"
src = "192.0.2.2"
dst = "192.0.2.1"
"#;

    #[test]
    fn validation_errors_name_file_line_and_field() {
        let net = Network::parse(Path::new("net.toml"), GOOD.to_string()).unwrap();
        let err = net.build_nodes(0).unwrap_err();
        assert_eq!(err.field, "nodes[0].sas[1].key");
        assert_eq!(err.line, Some(18));
        assert!(
            err.to_string()
                .starts_with("net.toml:18: nodes[0].sas[1].key: ")
        );
    }

    #[test]
    fn syntax_and_type_errors_have_a_line() {
        let bad = GOOD.replace("spi = 0x2002", "spi = \"lots\"");
        let err = Network::parse(Path::new("net.toml"), bad).unwrap_err();
        assert!(err.line.is_some(), "{err}");
        let typo = GOOD.replace("underlay =", "underlai =");
        assert!(Network::parse(Path::new("net.toml"), typo).is_err());
    }
}

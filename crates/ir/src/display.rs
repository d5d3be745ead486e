//! A readable text form of a graph, one node per line.

use crate::graph::Graph;
use crate::op::Op;
use std::fmt;

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outputs: Vec<String> = self.outputs().iter().map(|o| o.to_string()).collect();
        writeln!(
            f,
            "graph ({} nodes, outputs: {})",
            self.len(),
            outputs.join(", ")
        )?;
        for (i, node) in self.nodes().iter().enumerate() {
            write!(f, "  %{i} = {}", node.op.name())?;
            match &node.op {
                Op::Input { name } | Op::Param { name } => write!(f, " \"{name}\"")?,
                Op::Constant { data } => write!(f, " <{} bytes>", data.len())?,
                op => {
                    let args: Vec<String> = node.inputs.iter().map(|i| i.to_string()).collect();
                    write!(f, "({})", args.join(", "))?;
                    let attrs = attributes(op);
                    if !attrs.is_empty() {
                        write!(f, " {{{attrs}}}")?;
                    }
                }
            }
            write!(f, " : {}{}", node.dtype, node.shape)?;
            if let Some(l) = &node.label {
                write!(f, "  # {l}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// `key: value` pairs of an op's attributes, from its JSON form.
fn attributes(op: &Op) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(op) else {
        return String::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "op")
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

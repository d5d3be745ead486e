//! Dimensions (static or symbolic), shapes, and bindings of symbols to values.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One dimension of a shape: a known size, or a named symbol with an optional upper bound.
///
/// A bounded symbol (e.g. `seq <= 128`) lets a graph be compiled once for the bound and run for
/// any actual extent up to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Static(usize),
    Sym {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
}

impl Dim {
    /// A symbolic dim with no bound.
    pub fn sym(name: impl Into<String>) -> Dim {
        Dim::Sym {
            name: name.into(),
            max: None,
        }
    }

    /// A symbolic dim with an upper bound.
    pub fn bounded(name: impl Into<String>, max: usize) -> Dim {
        Dim::Sym {
            name: name.into(),
            max: Some(max),
        }
    }

    /// The size when static.
    pub fn as_static(&self) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym { .. } => None,
        }
    }

    /// The largest value this dim can take: its size, a symbol's bound, or `None` if unbounded.
    pub fn upper_bound(&self) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym { max, .. } => *max,
        }
    }

    /// Whether two dims denote the same extent (equal sizes, or the same symbol).
    pub fn same_extent(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Static(a), Dim::Static(b)) => a == b,
            (Dim::Sym { name: a, .. }, Dim::Sym { name: b, .. }) => a == b,
            _ => false,
        }
    }

    /// The value under `binding`, or `None` when a symbol is unbound.
    pub fn resolve(&self, binding: &DimBinding) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym { name, .. } => binding.get(name),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Static(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym { name, max: None } => write!(f, "{name}"),
            Dim::Sym { name, max: Some(m) } => write!(f, "{name}<={m}"),
        }
    }
}

/// A tensor shape: a list of dims, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A fully static shape.
    pub fn of(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    /// A scalar (rank 0).
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The sizes when every dim is static.
    pub fn as_static(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    /// Whether every dim is static.
    pub fn is_static(&self) -> bool {
        self.0.iter().all(|d| matches!(d, Dim::Static(_)))
    }

    /// The sizes with every symbol at its upper bound, or `None` if a symbol is unbounded.
    pub fn upper_bounds(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::upper_bound).collect()
    }

    /// The sizes under `binding`, or the name of the first unbound symbol.
    pub fn resolve(&self, binding: &DimBinding) -> Result<Vec<usize>, String> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Ok(*n),
                Dim::Sym { name, .. } => binding.get(name).ok_or_else(|| name.clone()),
            })
            .collect()
    }

    /// Whether two shapes denote the same extents dim by dim.
    pub fn same_extents(&self, other: &Shape) -> bool {
        self.rank() == other.rank() && self.0.iter().zip(&other.0).all(|(a, b)| a.same_extent(b))
    }

    /// The names of the symbols used, in order of first appearance.
    pub fn symbols(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for d in &self.0 {
            if let Dim::Sym { name, .. } = d {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// The product of the static dims and the multiset of symbols, which together identify the
    /// element count of the shape (used to check reshapes).
    pub(crate) fn volume_signature(&self) -> Option<(usize, Vec<&str>)> {
        let mut prod: usize = 1;
        let mut syms: Vec<&str> = Vec::new();
        for d in &self.0 {
            match d {
                Dim::Static(n) => prod = prod.checked_mul(*n)?,
                Dim::Sym { name, .. } => syms.push(name),
            }
        }
        syms.sort_unstable();
        Some((prod, syms))
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(v: Vec<Dim>) -> Shape {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Shape {
        Shape::of(v)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Shape {
        Shape::of(&v)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Numpy broadcasting of two shapes, or `None` when they are incompatible.
///
/// Dims are aligned from the right; a static 1 stretches to the other dim; otherwise the two dims
/// must denote the same extent.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let rank = a.rank().max(b.rank());
    let one = Dim::Static(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank {
            &a.0[i + a.rank() - rank]
        } else {
            &one
        };
        let db = if i + b.rank() >= rank {
            &b.0[i + b.rank() - rank]
        } else {
            &one
        };
        let d = if da == &one {
            db.clone()
        } else if db == &one || da.same_extent(db) {
            da.clone()
        } else {
            return None;
        };
        out.push(d);
    }
    Some(Shape(out))
}

/// Values for the symbols of a graph (e.g. `seq = 17`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DimBinding(IndexMap<String, usize>);

impl DimBinding {
    pub fn new() -> DimBinding {
        DimBinding::default()
    }

    /// Binds `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: usize) -> &mut Self {
        self.0.insert(name.into(), value);
        self
    }

    /// Builder-style [`DimBinding::set`].
    pub fn with(mut self, name: impl Into<String>, value: usize) -> Self {
        self.set(name, value);
        self
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.0.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl fmt::Display for DimBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[usize]) -> Shape {
        Shape::of(dims)
    }

    #[test]
    fn broadcast_examples() {
        assert_eq!(broadcast_shapes(&s(&[2, 3]), &s(&[3])), Some(s(&[2, 3])));
        assert_eq!(
            broadcast_shapes(&s(&[4, 1, 5]), &s(&[3, 1])),
            Some(s(&[4, 3, 5]))
        );
        assert_eq!(broadcast_shapes(&s(&[]), &s(&[2])), Some(s(&[2])));
        assert_eq!(broadcast_shapes(&s(&[2, 3]), &s(&[2])), None);
        let seq = Shape(vec![Dim::bounded("seq", 8), Dim::Static(4)]);
        assert_eq!(broadcast_shapes(&seq, &s(&[1, 4])), Some(seq.clone()));
        let other = Shape(vec![Dim::sym("n"), Dim::Static(4)]);
        assert_eq!(broadcast_shapes(&seq, &other), None);
    }

    #[test]
    fn dims_serialize_compactly() {
        let sh = Shape(vec![
            Dim::Static(2),
            Dim::bounded("seq", 128),
            Dim::sym("b"),
        ]);
        let json = serde_json::to_string(&sh).unwrap();
        assert_eq!(json, r#"[2,{"name":"seq","max":128},{"name":"b"}]"#);
        assert_eq!(serde_json::from_str::<Shape>(&json).unwrap(), sh);
    }

    #[test]
    fn resolve_reports_unbound_symbol() {
        let sh = Shape(vec![Dim::sym("b"), Dim::Static(3)]);
        assert_eq!(sh.resolve(&DimBinding::new()), Err("b".to_string()));
        assert_eq!(sh.resolve(&DimBinding::new().with("b", 5)), Ok(vec![5, 3]));
        assert_eq!(sh.to_string(), "[b, 3]");
    }
}

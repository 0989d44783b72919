//! A real multi-tenant corpus: documents embedded by a real model, each with its owner (the
//! tenant) and a query text of its own, as `corpus/embed.py` writes them (`scripts/bench-corpus
//! prepare`): `docs.f32` and `queries.f32` (rows of little-endian `f32`), `owners.txt` (one
//! owner per row, rows grouped by owner) and `corpus.json` (what was embedded, and how).

use std::ops::Range;
use std::path::Path;

use crate::pg::Result;

/// One owner's rows.
pub struct Owner {
    pub name: String,
    pub rows: Range<usize>,
}

pub struct Corpus {
    pub dims: usize,
    /// One line on the collection and the model, for reports.
    pub description: String,
    docs: Vec<f32>,
    queries: Vec<f32>,
    /// Largest first (ties by name), as the synthetic tenants are.
    pub owners: Vec<Owner>,
}

fn read_f32s(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() % 4 != 0 {
        return Err(format!("{}: not a whole number of float32 values", path.display()).into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The owners of `names` (one per row), whose rows must be contiguous.
fn owners(names: &[&str]) -> Result<Vec<Owner>> {
    let mut out: Vec<Owner> = Vec::new();
    for (i, &name) in names.iter().enumerate() {
        match out.last_mut() {
            Some(o) if o.name == name => o.rows.end = i + 1,
            _ => {
                if out.iter().any(|o| o.name == name) {
                    return Err(format!("owner {name:?}: rows not grouped").into());
                }
                out.push(Owner {
                    name: name.to_string(),
                    rows: i..i + 1,
                });
            }
        }
    }
    out.sort_by(|a, b| b.rows.len().cmp(&a.rows.len()).then(a.name.cmp(&b.name)));
    Ok(out)
}

impl Corpus {
    pub fn load(dir: &Path) -> Result<Self> {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("corpus.json")).map_err(
                |e| format!("{}: {e} (run scripts/bench-corpus prepare)", dir.display()),
            )?)?;
        let dims = meta["dims"].as_u64().ok_or("corpus.json: no dims")? as usize;
        let docs = read_f32s(&dir.join("docs.f32"))?;
        let queries = read_f32s(&dir.join("queries.f32"))?;
        let names = std::fs::read_to_string(dir.join("owners.txt"))?;
        let names: Vec<&str> = names.lines().collect();
        if docs.len() != names.len() * dims || queries.len() != docs.len() {
            return Err(format!(
                "{}: {} owners, {} document and {} query values of {dims} dimensions do not match",
                dir.display(),
                names.len(),
                docs.len(),
                queries.len()
            )
            .into());
        }
        let owners = owners(&names)?;
        let description = format!(
            "{}; {} documents of {} owners; embedded by {}",
            meta["collection"].as_str().unwrap_or("a text collection"),
            names.len(),
            owners.len(),
            meta["model"]
                .as_str()
                .unwrap_or("a sentence-embedding model"),
        );
        Ok(Self {
            dims,
            description,
            docs,
            queries,
            owners,
        })
    }

    pub fn len(&self) -> usize {
        self.docs.len() / self.dims
    }

    fn rows(values: &[f32], dims: usize, rows: impl Iterator<Item = usize>) -> Vec<Vec<f32>> {
        rows.map(|r| values[r * dims..(r + 1) * dims].to_vec())
            .collect()
    }

    /// The documents of `rows`.
    pub fn docs(&self, rows: Range<usize>) -> Vec<Vec<f32>> {
        Self::rows(&self.docs, self.dims, rows)
    }

    /// At most `n` queries of the documents of `rows`, evenly spread over them.
    pub fn queries(&self, rows: Range<usize>, n: usize) -> Vec<Vec<f32>> {
        let step = rows.len().div_ceil(n.max(1)).max(1);
        Self::rows(&self.queries, self.dims, rows.step_by(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_contiguous_runs_largest_first() {
        let o = owners(&["b", "b", "a", "c", "c", "c"]).unwrap();
        let got: Vec<(&str, Range<usize>)> = o
            .iter()
            .map(|o| (o.name.as_str(), o.rows.clone()))
            .collect();
        assert_eq!(got, [("c", 3..6), ("b", 0..2), ("a", 2..3)]);
        assert!(owners(&["a", "b", "a"]).is_err());
    }

    #[test]
    fn loads_what_the_embedding_step_writes() {
        let dir = std::env::temp_dir().join(format!("ruvector-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join("docs.f32"), &bytes).unwrap();
        std::fs::write(dir.join("queries.f32"), &bytes).unwrap();
        std::fs::write(dir.join("owners.txt"), "x\ny\ny\n").unwrap();
        std::fs::write(
            dir.join("corpus.json"),
            r#"{"dims": 4, "collection": "c", "model": "m"}"#,
        )
        .unwrap();
        let c = Corpus::load(&dir).unwrap();
        assert_eq!((c.len(), c.owners[0].name.as_str()), (3, "y"));
        assert_eq!(c.docs(c.owners[0].rows.clone())[1], [8.0, 9.0, 10.0, 11.0]);
        assert_eq!(
            c.queries(0..3, 2),
            [vec![0.0, 1.0, 2.0, 3.0], vec![8.0, 9.0, 10.0, 11.0]]
        );
        assert_eq!(c.queries(1..3, 5).len(), 2);
        std::fs::write(dir.join("owners.txt"), "x\ny\n").unwrap();
        assert!(Corpus::load(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Index definitions of tenant tables, as text: a `ruhnsw` index made before its table was
//! registered is rebuilt keyed by tenant from its own definition (`pg_get_indexdef`).

/// `definition` (a `CREATE INDEX ... USING ruhnsw (...)` as `pg_get_indexdef` writes it) with
/// `column` (already quoted) added as the last key column; `None` if the definition does not
/// have that shape.
pub fn with_key_column(definition: &str, column: &str) -> Option<String> {
    let open = definition.find(" USING ruhnsw (")? + " USING ruhnsw (".len();
    let bytes = definition.as_bytes();
    let mut depth = 1usize;
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(format!(
                            "{}, {column}{}",
                            &definition[..i],
                            &definition[i..]
                        ));
                    }
                }
                _ => {}
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_column_becomes_the_last_key() {
        assert_eq!(
            with_key_column(
                "CREATE INDEX docs_vec ON public.docs USING ruhnsw (vec vector_cosine_ops) WITH (m='8')",
                "tenant_id"
            )
            .unwrap(),
            "CREATE INDEX docs_vec ON public.docs USING ruhnsw (vec vector_cosine_ops, tenant_id) WITH (m='8')"
        );
    }

    #[test]
    fn parentheses_and_quotes_inside_the_key_are_skipped() {
        assert_eq!(
            with_key_column(
                r#"CREATE INDEX "x)" ON s.t USING ruhnsw (((v)::vector(3)) vector_l2_ops) WHERE (k <> ')')"#,
                r#""Tenant""#
            )
            .unwrap(),
            r#"CREATE INDEX "x)" ON s.t USING ruhnsw (((v)::vector(3)) vector_l2_ops, "Tenant") WHERE (k <> ')')"#
        );
        assert_eq!(
            with_key_column(
                r#"CREATE INDEX i ON t USING ruhnsw ("a)b" vector_l2_ops)"#,
                "c"
            )
            .unwrap(),
            r#"CREATE INDEX i ON t USING ruhnsw ("a)b" vector_l2_ops, c)"#
        );
    }

    #[test]
    fn other_shapes_are_not_touched() {
        assert_eq!(
            with_key_column("CREATE INDEX i ON t USING btree (a)", "c"),
            None
        );
        assert_eq!(
            with_key_column("CREATE INDEX i ON t USING ruhnsw (a", "c"),
            None
        );
    }
}

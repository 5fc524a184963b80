use super::*;
use crate::sql::parse_query;
use std::path::Path;

/// `body` with its `@DEF`s taken out and its macros expanded, as SQL.
fn expanded(body: &str) -> String {
    let (blanked, defs) = extract_defs(body).unwrap();
    assert_eq!(
        blanked.lines().count(),
        body.lines().count(),
        "positions are kept"
    );
    let mut q = parse_query(
        Path::new("m.sql"),
        &blanked,
        crate::sql::Dialect::DataFusion,
    )
    .unwrap();
    expand_sql_macros(&mut q, &defs, crate::sql::Dialect::DataFusion).unwrap();
    q.to_string()
}

/// The error of expanding `body`.
fn refused(body: &str) -> MacroError {
    let (blanked, defs) = extract_defs(body).unwrap();
    let mut q = parse_query(
        Path::new("m.sql"),
        &blanked,
        crate::sql::Dialect::DataFusion,
    )
    .unwrap();
    expand_sql_macros(&mut q, &defs, crate::sql::Dialect::DataFusion).unwrap_err()
}

#[test]
fn def_and_logical_macros_expand_on_the_ast() {
    assert_eq!(
        expanded(
            "@DEF(min_total, 10);\n@def(flag, true);\nSELECT a FROM t WHERE @AND(a > @min_total, @IF(@flag, b = 'x; y'), @IF(false, c = 1)) AND @OR(d, NULL, e)"
        ),
        "SELECT a FROM t WHERE ((a > 10) AND ((b = 'x; y'))) AND ((d) OR (e))"
    );
    // Substituted values keep their precedence.
    assert_eq!(
        expanded("@DEF(two, 1 + 1);\nSELECT @two * 3 AS x"),
        "SELECT (1 + 1) * 3 AS x"
    );
    // Conditions of literals are evaluated at load; others become CASE.
    assert_eq!(
        expanded(
            "@DEF(n, 0);\nSELECT a FROM t WHERE @AND(a > 1, @IF(@n > 0, b = 1), @IF(@n = 0 AND 'x' < 'y', c = 2), @IF(a > 0, d))"
        ),
        "SELECT a FROM t WHERE (((a > 1) AND ((c = 2))) AND (CASE WHEN a > 0 THEN d ELSE NULL END))"
    );
    assert!(extract_defs("@DEF(1, 2); SELECT 1").is_err());
}

#[test]
fn each_expands_into_lists_with_aliases_and_interpolated_names() {
    assert_eq!(
        expanded(
            "@DEF(fruits, ['apple', 'pear']);\nSELECT id, @EACH(@fruits, x -> SUM(CASE WHEN fruit = x THEN 1 ELSE 0 END) AS @{x}_count) FROM t GROUP BY id"
        ),
        "SELECT id, sum(CASE WHEN fruit = 'apple' THEN 1 ELSE 0 END) AS apple_count, sum(CASE WHEN fruit = 'pear' THEN 1 ELSE 0 END) AS pear_count FROM t GROUP BY id"
    );
    // In an IN list, a call's arguments and GROUP BY; macros in the body see each item.
    assert_eq!(
        expanded(
            "SELECT CONCAT(@EACH([a, b], c -> UPPER(c))) AS k FROM t WHERE n IN (@EACH([1, 2], v -> v * 10)) AND @AND(@EACH([x, y], c -> @IF(c = c, c > 0))) GROUP BY @EACH([a, b], c -> c)"
        ),
        "SELECT concat(upper(a), upper(b)) AS k FROM t WHERE n IN (1 * 10, 2 * 10) AND ((CASE WHEN x = x THEN x > 0 ELSE NULL END) AND (CASE WHEN y = y THEN y > 0 ELSE NULL END)) GROUP BY a, b"
    );
    let e = refused("SELECT 1 + @EACH([1], x -> x) AS n");
    assert!(e.message.contains("yields a list"), "{e:?}");
    assert_eq!(e.at, Some((1, 12)));
}

#[test]
fn sql_macros_defined_as_lambdas_apply_to_their_arguments() {
    assert_eq!(
        expanded(
            "@DEF(cents, (x, rate) -> ROUND(x * rate * 100));\n@DEF(rate, 1.5);\nSELECT @cents(amount, @rate) AS c FROM t"
        ),
        "SELECT ROUND(amount * 1.5 * 100) AS c FROM t"
    );
    let e = refused("@DEF(f, (a, b) -> a + b);\nSELECT @f(1) AS x");
    assert!(
        e.message.contains("takes 2 argument(s) (a, b), got 1"),
        "{e:?}"
    );
    assert_eq!(e.at, Some((2, 8)));
    let e = refused("@DEF(a, @a + 1);\nSELECT @a AS x");
    assert!(e.message.contains("expands into itself"), "{e:?}");
}

#[test]
fn sql_star_union_and_builtins() {
    assert_eq!(
        expanded("SELECT @SQL('a + 1') * 2 AS x FROM t"),
        "SELECT (a + 1) * 2 AS x FROM t"
    );
    assert!(
        refused("SELECT @SQL('a; DROP TABLE t') AS x")
            .message
            .contains("not a single SQL expression")
    );
    assert_eq!(
        expanded("SELECT @STAR(o, exclude := [secret, ssn]), 1 AS one FROM orders AS o"),
        "SELECT o.* EXCLUDE (secret, ssn), 1 AS one FROM orders AS o"
    );
    assert!(
        refused("SELECT @STAR(o, prefix := 'p_') FROM o")
            .message
            .contains("needs the relation's column list")
    );
    assert_eq!(
        expanded("SELECT * FROM @UNION('all', a.t, b.t) AS u"),
        "SELECT * FROM (SELECT * FROM a.t UNION ALL BY NAME SELECT * FROM b.t) AS u"
    );
    assert_eq!(
        expanded("@UNION(false, 'distinct', a.t, b.t)"),
        "SELECT * FROM (SELECT * FROM a.t)"
    );
    assert_eq!(
        expanded("SELECT @GENERATE_SURROGATE_KEY(a, b) AS k, @SAFE_DIV(x, y) AS d FROM t"),
        "SELECT (md5(concat(coalesce(CAST((a) AS VARCHAR), '_sqlmesh_surrogate_key_null_'), '|', coalesce(CAST((b) AS VARCHAR), '_sqlmesh_surrogate_key_null_')))) AS k, ((x) / nullif((y), 0)) AS d FROM t"
    );
    assert_eq!(
        expanded("@DEF(src, raw.orders);\nSELECT x AS @{src}_x FROM @src"),
        "SELECT x AS \"raw.orders_x\" FROM raw.orders"
    );
    assert!(
        refused("@DEF(q, 'a\" AS b');\nSELECT 1 AS @{q}")
            .message
            .contains("cannot contain")
    );
    let e = refused("SELECT a AS @{nope}_x FROM t");
    assert!(e.message.contains("`@{nope}` names no"), "{e:?}");
    assert_eq!(e.at, Some((1, 13)));
}

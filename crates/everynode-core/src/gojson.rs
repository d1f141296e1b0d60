//! The bytes Go's `encoding/json` writes for decoded JSON (`map[string]interface{}`), which is
//! how upstream's DaemonSet controller encodes ControllerRevision data (`getPatch`: the set is
//! marshalled, unmarshalled into maps and marshalled again). Upstream finds a set's current
//! revision by comparing those bytes with the stored ones, so a revision everynode writes must
//! hold exactly them for the built-in controller (and `kubectl rollout`) to recognise it.
//!
//! What that means:
//! - object keys sorted by bytes at every level, no whitespace;
//! - strings escaped as Go does: `"` `\` `\n` `\r` `\t` `\b` `\f` by name, other control
//!   characters as `\u00xx`, and the HTML-safe `\u003c` `\u003e` `\u0026`, plus `\u2028` and
//!   `\u2029`;
//! - numbers as Go prints a `float64`: integers beyond 2^53 lose precision, 1e21 and above (or
//!   below 1e-6) use an exponent (`1e+21`, `1e-7`).
//!
//! Upstream's pod-template fields that Go writes as `null` when unset (a `*string` or slice
//! without `omitempty`) are put back by [`with_go_nulls`]: the typed Rust objects drop them.

use serde_json::Value;

/// Go's `encoding/json` encoding of `value`, decoded as `interface{}` (see the module doc).
pub fn encode(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(
        value,
        &Scalars {
            string: write_string,
            other: write_go_scalar,
        },
        &mut out,
    );
    out
}

/// How [`write_sorted`] writes strings (keys too) and the other scalars.
pub(crate) struct Scalars {
    pub(crate) string: fn(&str, &mut String),
    pub(crate) other: fn(&Value, &mut String),
}

/// Writes `value` as compact JSON with object keys sorted by bytes at every level, scalars as
/// `scalars` says.
pub(crate) fn write_sorted(value: &Value, scalars: &Scalars, out: &mut String) {
    match value {
        Value::String(s) => (scalars.string)(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, scalars, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                (scalars.string)(key, out);
                out.push(':');
                write_sorted(item, scalars, out);
            }
            out.push('}');
        }
        other => (scalars.other)(other, out),
    }
}

fn write_go_scalar(value: &Value, out: &mut String) {
    match value {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        // Strings and containers are [`write_sorted`]'s.
        _ => out.push_str("null"),
    }
}

/// Largest integer a `float64` holds exactly.
const EXACT_FLOAT_INTEGER: u64 = 1 << 53;

fn write_number(n: &serde_json::Number, out: &mut String) {
    if let Some(i) = n
        .as_i64()
        .filter(|i| i.unsigned_abs() <= EXACT_FLOAT_INTEGER)
    {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64().filter(|u| *u <= EXACT_FLOAT_INTEGER) {
        out.push_str(&u.to_string());
    } else {
        write_float(n.as_f64().unwrap_or(0.0), out);
    }
}

/// `strconv.AppendFloat(f, 'f' or 'e', -1, 64)` as `encoding/json` chooses and tidies it.
fn write_float(f: f64, out: &mut String) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes the shortest digits as `1.5e-7` / `1e21`; Go as `1.5e-7` / `1e+21`.
        let formatted = format!("{f:e}");
        match formatted.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                out.push_str(mantissa);
                out.push_str("e+");
                out.push_str(exponent);
            }
            _ => out.push_str(&formatted),
        }
    } else {
        // Rust's `Display` is the shortest round-trip digits without an exponent, as Go's 'f'.
        out.push_str(&f.to_string());
    }
}

fn write_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Puts back the `null`s Go writes in a pod template for unset fields that have no
/// `omitempty` (k8s.io/api core/v1): a gRPC probe's `service`, a projected volume's
/// `sources`, a ScaleIO volume's `secretRef`, and `apiGroup` of an ephemeral volume claim's
/// `dataSource` and `dataSourceRef`.
pub fn with_go_nulls(mut template: Value) -> Value {
    let Some(spec) = template.get_mut("spec") else {
        return template;
    };
    for list in ["containers", "initContainers"] {
        for container in items(spec, list) {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(grpc) = container.get_mut(probe).and_then(|p| p.get_mut("grpc")) {
                    null_if_absent(grpc, "service");
                }
            }
        }
    }
    for volume in items(spec, "volumes") {
        if let Some(projected) = volume.get_mut("projected") {
            null_if_absent(projected, "sources");
        }
        if let Some(scale_io) = volume.get_mut("scaleIO") {
            null_if_absent(scale_io, "secretRef");
        }
        let claim = volume
            .get_mut("ephemeral")
            .and_then(|e| e.get_mut("volumeClaimTemplate"))
            .and_then(|t| t.get_mut("spec"));
        if let Some(claim) = claim {
            for reference in ["dataSource", "dataSourceRef"] {
                if let Some(reference) = claim.get_mut(reference) {
                    null_if_absent(reference, "apiGroup");
                }
            }
        }
    }
    template
}

fn items<'a>(value: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    value
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn null_if_absent(object: &mut Value, key: &str) {
    if let Some(fields) = object.as_object_mut() {
        fields.entry(key).or_insert(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_by_bytes_without_whitespace() {
        let value = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": true}], "c": null}, "B": []});
        assert_eq!(
            encode(&value),
            r#"{"B":[],"a":{"c":null,"d":[1,{"y":true,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let value = json!("a<b>&c \"q\" \\ \n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f} é \u{2028}\u{2029}");
        assert_eq!(
            encode(&value),
            r#""a\u003cb\u003e\u0026c \"q\" \\ \n\r\t\b\f\u0001\u001f"#.to_owned()
                + "\u{7f} é "
                + r#"\u2028\u2029""#
        );
    }

    #[test]
    fn numbers_are_printed_as_go_prints_a_float64() {
        let cases = [
            (json!(30), "30"),
            (json!(-5), "-5"),
            (json!(9_007_199_254_740_993_i64), "9007199254740992"),
            (json!(i64::MAX), "9223372036854776000"),
            (json!(u64::MAX), "18446744073709552000"),
            (json!(0.5), "0.5"),
            (json!(1e21), "1e+21"),
            (json!(1.5e-7), "1.5e-7"),
            (json!(1e-6), "0.000001"),
        ];
        for (value, go) in cases {
            assert_eq!(encode(&value), go, "{value}");
        }
    }

    #[test]
    fn unset_fields_go_writes_as_null_are_put_back() {
        let template = json!({"spec": {
            "containers": [{"name": "c", "readinessProbe": {"grpc": {"port": 9000}}}],
            "volumes": [
                {"name": "p", "projected": {"defaultMode": 420}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}
                }}}}
            ]
        }});
        let go = with_go_nulls(template);
        assert_eq!(
            go["spec"]["containers"][0]["readinessProbe"]["grpc"]["service"],
            Value::Null
        );
        assert!(
            go["spec"]["containers"][0]["readinessProbe"]["grpc"]
                .as_object()
                .is_some_and(|o| o.contains_key("service"))
        );
        assert!(
            go["spec"]["volumes"][0]["projected"]
                .as_object()
                .is_some_and(|o| o.contains_key("sources"))
        );
        let claim = &go["spec"]["volumes"][1]["ephemeral"]["volumeClaimTemplate"]["spec"];
        assert!(
            claim["dataSource"]
                .as_object()
                .is_some_and(|o| o.contains_key("apiGroup"))
        );
        assert!(claim.get("dataSourceRef").is_none());
    }
}

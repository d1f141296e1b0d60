//! `everynode plan -f`'s manifest decoding on arbitrary text: YAML documents and lists, the
//! DaemonSet kinds, and the CRD's schema and CEL rules evaluated locally. It may refuse the
//! input; it must not panic, and what it accepts must plan.
#![no_main]

use everynode::cli::plan::{parse_objects, set_from_objects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse_objects(text, "fuzz.yaml") else {
        return;
    };
    if let Ok((set, _api_version)) = set_from_objects(&objects, "default", "fuzz.yaml") {
        let input = everynode_core::PlanInput::new(set, everynode_core::Timestamp::UNIX_EPOCH);
        let _ = everynode_core::plan(&input);
    }
});

//! `weir-test-passthrough`: a stage with both phases that changes nothing and calls no host
//! function — the floor of what a stage costs, measured by the `stage_call` benchmark.

use weir_sdk::{Stage, StageInfo};

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct PassThrough;

impl Stage for PassThrough {
    fn info() -> StageInfo {
        StageInfo::new("passthrough", env!("CARGO_PKG_VERSION"))
            .on_request()
            .on_response()
    }
}

weir_sdk::export_stage!(PassThrough);

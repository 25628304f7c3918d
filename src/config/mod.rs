//! The extension's `VMSnapshotScriptPluginConfig.json` and the plugin-host
//! file `VMSnapshotPluginHost.conf` (SPEC.md §3).
//!
//! Every file the existing extension accepts and runs correctly must keep
//! working, so defaults, clamps and warnings are the extension's. Types are
//! strict: `"false"` is not a boolean, and a wrong type is an error that names
//! the key, never a silent coercion. Two forms the extension runs correctly
//! are read as it reads them, each with a warning naming the key: a known key
//! set to `null` is absent, and an integral float (`30.0`, `1e3`) given for
//! an integer key is that integer.
//!
//! One file, one job: `extension.rs` the JSON config, `pluginhost.rs` the
//! plugin-host file, `workload.rs` a workload application's settings.

mod extension;
mod pluginhost;
pub mod workload;
pub mod workload_conf;

pub use extension::{
    closest_key, edit_distance, parse, Config, ConfigError, Loaded, NearMiss, ScriptConfig,
    BRIDGE_CONFIG_PATH, DEFAULT_APPS_DIR, DEFAULT_CONFIG_PATH, DEFAULT_POLL_SECS,
    DEFAULT_TIMEOUT_SECS, KNOWN_KEYS, MAX_CONFIG_BYTES, MAX_TIMEOUT_SECS,
};
pub use pluginhost::{
    parse_host_config, HostConfig, HostConfigError, HostPlugin, DEFAULT_HOST_CONFIG_PATH,
};

//! The one configuration, loaded once: built-in defaults, then `rendermart.toml`, then
//! `RENDERMART_*` environment variables (nested keys with `__`, e.g.
//! `RENDERMART_IDENTITY__SESSION_TTL_SECS`), then command-line flags. Nothing else in the
//! code reads the environment.
//!
//! Each process-wide setting is declared once, in [`settings!`]: its type, default and
//! doc comment; `=> flag("VALUE")` gives it a command-line flag named after it. The
//! environment twin and the `rendermart.toml` key follow from the name. Each service's own
//! section (`[identity]`…) is declared by its crate ([`Service::Config`]) and read through
//! [`Settings::source`]; so is where a service runs when not here: `<name>_url`
//! (`RENDERMART_<NAME>_URL`, `--<name>-url`), one per service in the list.
//!
//! [`Service::Config`]: rendermart_platform::service::Service::Config

use std::{collections::BTreeSet, fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use figment::{
    providers::{Format, Serialized, Toml},
    value::{Dict, Value},
    Figment,
};
use rendermart_platform::{
    http::{EdgeConfig, ServeConfig, TrustedProxies},
    objects::ObjectsConfig,
    service::ConfigSource,
    telemetry::LogFormat,
};
use rendermart_types::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};

/// A setting with a command-line flag.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// The settings key; the flag is the key with `-` for `_`.
    pub key: &'static str,
    pub value_name: &'static str,
    /// The setting's doc comment.
    pub help: &'static str,
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $default:expr $(=> flag($value_name:literal))? ; )*) => {
        /// Everything a RenderMart process needs to start.
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
            /// The layered sources this was read from: the services' sections and URLs are
            /// read from it.
            #[serde(skip)]
            pub source: ConfigSource,
        }

        impl Default for Settings {
            fn default() -> Self {
                Self {
                    $( $field: $default, )*
                    source: service_defaults(),
                }
            }
        }

        /// The fields (secrets redacted by their types); not the raw sources, which hold
        /// secrets as they were given.
        impl fmt::Debug for Settings {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Settings")
                    $( .field(stringify!($field), &self.$field) )*
                    .finish_non_exhaustive()
            }
        }

        /// The settings that have a command-line flag.
        pub fn flags() -> Vec<Flag> {
            [$( settings!(@flag $field [$($doc)+] $($value_name)?) ),*]
                .into_iter()
                .flatten()
                .collect()
        }
    };
    (@flag $field:ident [$($doc:literal)+] $value_name:literal) => {
        Some(Flag { key: stringify!($field), value_name: $value_name, help: concat!($($doc),+) })
    };
    (@flag $field:ident [$($doc:literal)+]) => {
        None
    };
}

settings! {
    /// Address to serve HTTP on.
    addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)) => flag("HOST:PORT");
    /// Separate address for /healthz, /readyz and /metrics; when set, /metrics is served
    /// only there (the public port answers 404 for it).
    ops_addr: Option<SocketAddr> = None => flag("HOST:PORT");
    /// Directory for the embedded SQLite files, the local bus and objects.
    data_dir: PathBuf = PathBuf::from("./data") => flag("DIR");
    /// PostgreSQL URL (each service in its own schema); unset: SQLite files under the data
    /// directory.
    database_url: Option<SecretUrl> = None => flag("URL");
    /// Redis URL for what replicas share (rate-limit counters, carts); unset: in-process.
    redis_url: Option<SecretUrl> = None => flag("URL");
    /// RabbitMQ URL (amqp://…) for events; unset: the in-process bus.
    bus: Option<SecretUrl> = None => flag("URL");
    /// Services to run in this process: `all` or a list such as `identity,web`.
    services: ServiceSet = ServiceSet::all() => flag("LIST");
    /// Log format: `auto` (pretty on a terminal, JSON lines otherwise), `json` or `pretty`.
    log_format: LogFormat = LogFormat::Auto => flag("auto|json|pretty");
    /// OTLP/HTTP endpoint to export traces to, e.g. http://collector:4318.
    otlp_endpoint: Option<String> = None => flag("URL");
    /// Secret the services of one deployment share to authenticate their internal calls;
    /// required as soon as any service runs in another process (prefer the environment
    /// variable to the flag: flags show in process lists).
    service_secret: Option<Secret> = None => flag("SECRET");
    /// RabbitMQ exchange and queue prefix, and Redis key prefix.
    namespace: String = "rendermart".into();
    /// Log filter, `RUST_LOG` syntax.
    log_level: String = "info".into();
    /// Mark cookies `Secure` (set it when the site is served over HTTPS).
    cookie_secure: bool = false;
    /// Per-request timeout in seconds (408).
    request_timeout_secs: u64 = 30;
    /// Largest request body in bytes (413).
    body_limit_bytes: usize = 64 * 1024;
    /// Seconds a client has to send a request's headers (the slowloris bound).
    header_read_timeout_secs: u64 = ServeConfig::default().header_read_timeout.as_secs();
    /// Open connections at most per listener; beyond it, new ones wait.
    max_connections: usize = ServeConfig::default().max_connections;
    /// Proxies (CIDRs) whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed; empty:
    /// none.
    trusted_proxies: TrustedProxies = TrustedProxies::default();
    /// `Strict-Transport-Security` max-age sent on secure requests; 0 never sends it.
    hsts_max_age_secs: u64 = EdgeConfig::default().hsts_max_age.as_secs();
    /// Where images and other files live: `[objects]` (a local directory by default, or S3).
    objects: ObjectsConfig = ObjectsConfig::default();
}

/// Which services run in this process: `all` or a comma-separated list. The names are
/// checked against the binary's list when the configuration is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceSet {
    /// `None` means all.
    names: Option<BTreeSet<String>>,
}

impl ServiceSet {
    pub fn all() -> Self {
        Self { names: None }
    }

    pub fn is_all(&self) -> bool {
        self.names.is_none()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.as_ref().is_none_or(|n| n.contains(name))
    }

    /// Every named service must be one of `known`.
    fn check(&self, known: &[&str]) -> Result<(), String> {
        for name in self.names.iter().flatten() {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown service {name:?} in `services` (known: {}, or all)",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl FromStr for ServiceSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "all" {
            return Ok(Self::all());
        }
        let names: BTreeSet<String> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            return Err("name at least one service, or all".into());
        }
        Ok(Self { names: Some(names) })
    }
}

impl TryFrom<String> for ServiceSet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ServiceSet> for String {
    fn from(s: ServiceSet) -> Self {
        s.to_string()
    }
}

impl fmt::Display for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.names {
            None => f.write_str("all"),
            Some(names) => f.write_str(&names.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// `value` with every null (an unset `Option`) removed, objects and arrays included.
fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|v| !v.is_null())
                .map(without_nulls)
                .collect(),
        ),
        other => other,
    }
}

/// Every service's section with its defaults, so a source that sets one field of a table
/// (`RENDERMART_IDENTITY__LOGIN_PER_IP__MAX`) keeps the table's other fields.
fn service_defaults() -> ConfigSource {
    crate::services::all()
        .into_iter()
        .fold(ConfigSource::new(), |source, def| {
            match def.config_section(&ConfigSource::new()) {
                Ok(defaults) => source.merge(Serialized::default(def.name, defaults)),
                Err(_) => source,
            }
        })
}

/// The key that says where service `name` runs when not in this process.
pub fn url_key(service: &str) -> String {
    format!("{service}_url")
}

impl Settings {
    /// Loads defaults ← `config_file` (if it exists) ← `env` (`RENDERMART_*` pairs) ←
    /// `flags` (settings key, value as typed), then checks every service's section and URL.
    /// The environment is passed in, so tests can load configuration without touching it.
    pub fn load(
        config_file: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, String)],
    ) -> Result<Self, Box<figment::Error>> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RENDERMART_") && !k.starts_with("RENDERMART_TEST_"))
            .collect();
        let mut source = service_defaults().merge(Serialized::defaults(Settings::default()));
        if config_file.exists() {
            source = source.merge(Toml::file(config_file));
        }
        let mut flag_dict = Dict::new();
        for (key, raw) in flags {
            flag_dict.insert(key.clone(), parse_value(raw));
        }
        let source = source
            .merge(EnvPairs(env))
            .merge(Serialized::globals(flag_dict));
        Self::from_source(source)
    }

    /// The settings of `source`, checked.
    fn from_source(source: Figment) -> Result<Self, Box<figment::Error>> {
        let mut settings: Settings = source.extract().map_err(Box::new)?;
        settings.source = source;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), Box<figment::Error>> {
        let defs = crate::services::all();
        let known: Vec<&str> = defs.iter().map(|d| d.name).collect();
        self.services.check(&known).map_err(figment::Error::from)?;
        for def in &defs {
            def.config_section(&self.source)?;
            if let Some(url) = self.service_url(def.name) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(Box::new(figment::Error::from(format!(
                        "`{}` must be an http:// or https:// URL, not {url:?}",
                        url_key(def.name)
                    ))));
                }
            }
        }
        Ok(())
    }

    /// Where service `name` runs when not in this process (`<name>_url`).
    pub fn service_url(&self, name: &str) -> Option<String> {
        self.source
            .extract_inner::<Option<String>>(&url_key(name))
            .ok()
            .flatten()
            .filter(|u| !u.trim().is_empty())
    }

    /// Service `name`'s section, as its crate declares it.
    pub fn section<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, Box<figment::Error>> {
        if self.source.contains(name) {
            self.source.extract_inner(name).map_err(Box::new)
        } else {
            Ok(T::default())
        }
    }

    /// The same settings with `value` at `key` (a dotted path such as
    /// `identity.login_per_ip.max`), as if the configuration file had said so. For tests
    /// and tools that build settings in code.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.set(key, value);
        self
    }

    /// [`Settings::with`], in place.
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        self.source = std::mem::take(&mut self.source).merge(Serialized::default(key, value));
    }

    /// The effective configuration as TOML: the settings, each service's section (defaults
    /// filled in) and where remote services run. Secrets show redacted: their types
    /// serialize that way.
    pub fn redacted_toml(&self) -> String {
        let mut doc = match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::map::Map::new(),
        };
        for def in crate::services::all() {
            if let Some(url) = self.service_url(def.name) {
                doc.insert(url_key(def.name), toml::Value::String(url));
            }
            match def.config_section(&self.source) {
                // TOML has no null: an unset optional table (`[studio.providers.openai]`)
                // is simply absent.
                Ok(section) => match toml::Value::try_from(without_nulls(section)) {
                    Ok(value) => {
                        doc.insert(def.name.to_owned(), value);
                    }
                    Err(e) => {
                        doc.insert(
                            def.name.to_owned(),
                            toml::Value::String(format!("cannot be shown: {e}")),
                        );
                    }
                },
                Err(e) => {
                    doc.insert(
                        def.name.to_owned(),
                        toml::Value::String(format!("invalid: {e}")),
                    );
                }
            }
        }
        toml::to_string_pretty(&toml::Value::Table(doc))
            .unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// A value as typed on the command line or in the environment: `30` is a number, `true` a
/// boolean, anything else text (figment's own rule for environment variables).
fn parse_value(raw: &str) -> Value {
    raw.parse().unwrap_or_else(|_| Value::from(raw))
}

/// `RENDERMART_*` variables as a figment provider, from an explicit list rather than the
/// process (figment's own `Env` always reads the process): `__` nests, keys lower-case.
struct EnvPairs(Vec<(String, String)>);

impl figment::Provider for EnvPairs {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.0 {
            let Some(key) = key.strip_prefix("RENDERMART_") else {
                continue;
            };
            let path: Vec<String> = key.split("__").map(|k| k.to_ascii_lowercase()).collect();
            insert_path(&mut dict, &path, parse_value(value));
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Dict::new().into());
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rendermart_identity::IdentityConfig;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        env(pairs)
    }

    #[test]
    fn defaults_run_the_embedded_setup() {
        let s = Settings::load("/nonexistent.toml".as_ref(), env(&[]), &[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, None);
        assert_eq!(s.services, ServiceSet::all());
        assert_eq!(s.service_url("identity"), None);
        assert_eq!(s.log_format, LogFormat::Auto);
        assert_eq!(s.ops_addr, None);
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.header_read_timeout_secs, 10);
        assert_eq!(s.max_connections, 10_000);
        let identity: IdentityConfig = s.section("identity").unwrap();
        assert_eq!(
            identity.session_ttl_secs,
            IdentityConfig::default().session_ttl_secs
        );
    }

    #[test]
    fn every_setting_with_a_flag_is_a_field_and_documented() {
        let defaults = toml::Value::try_from(Settings::default()).unwrap();
        for flag in flags_list() {
            assert!(!flag.help.trim().is_empty(), "{} has no help", flag.key);
            // Optional settings are absent from the serialized defaults; the rest are there.
            let optional = [
                "database_url",
                "redis_url",
                "bus",
                "otlp_endpoint",
                "service_secret",
                "ops_addr",
            ];
            assert!(
                optional.contains(&flag.key) || defaults.get(flag.key).is_some(),
                "{} is not a setting",
                flag.key
            );
        }
    }

    fn flags_list() -> Vec<Flag> {
        super::flags()
    }

    #[test]
    fn edge_settings_load_from_the_environment() {
        let s = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[
                ("RENDERMART_OPS_ADDR", "127.0.0.1:9090"),
                ("RENDERMART_TRUSTED_PROXIES", "10.0.0.0/8,192.168.0.0/16"),
                ("RENDERMART_LOG_FORMAT", "json"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(s.ops_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(s.trusted_proxies.to_string(), "10.0.0.0/8,192.168.0.0/16");
        assert_eq!(s.log_format, LogFormat::Json);
        let err = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[("RENDERMART_TRUSTED_PROXIES", "10.0.0.0/99")]),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/99"), "{err}");
    }

    #[test]
    fn file_then_env_then_flags_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rendermart.toml");
        std::fs::write(
            &file,
            "addr = \"0.0.0.0:9000\"\nlog_format = \"pretty\"\nservices = \"identity\"\n[identity]\nsession_ttl_secs = 60\n",
        )
        .unwrap();
        let s = Settings::load(&file, env(&[]), &[]).unwrap();
        assert_eq!(s.addr.port(), 9000);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(
            s.section::<IdentityConfig>("identity")
                .unwrap()
                .session_ttl_secs,
            60
        );
        assert!(!s.services.contains("web"));

        let e = env(&[
            ("RENDERMART_ADDR", "0.0.0.0:9100"),
            ("RENDERMART_SERVICES", "identity,web"),
            ("RENDERMART_IDENTITY__SESSION_TTL_SECS", "120"),
            ("RENDERMART_IDENTITY_URL", "http://identity:8080"),
            ("RENDERMART_TEST_DATABASE_URL", "ignored"),
            ("OTHER", "ignored"),
        ]);
        let s = Settings::load(&file, e.clone(), &[]).unwrap();
        assert_eq!(s.addr.port(), 9100);
        assert_eq!(
            s.section::<IdentityConfig>("identity")
                .unwrap()
                .session_ttl_secs,
            120
        );
        assert!(s.services.contains("web") && s.services.contains("identity"));
        assert_eq!(
            s.service_url("identity").as_deref(),
            Some("http://identity:8080")
        );

        let s = Settings::load(
            &file,
            e,
            &flags(&[
                ("addr", "127.0.0.1:9200"),
                ("identity_url", "http://10.0.0.1:81"),
            ]),
        )
        .unwrap();
        assert_eq!(s.addr.port(), 9200);
        assert_eq!(
            s.service_url("identity").as_deref(),
            Some("http://10.0.0.1:81")
        );
    }

    #[test]
    fn bad_values_are_reported_not_defaulted() {
        let load =
            |pairs: &[(&str, &str)]| Settings::load("/nonexistent.toml".as_ref(), env(pairs), &[]);
        let err = load(&[("RENDERMART_SERVICES", "identity,nope")]).unwrap_err();
        assert!(err.to_string().contains("unknown service"), "{err}");
        assert!(load(&[("RENDERMART_ADDR", "not an address")]).is_err());
        let err = load(&[("RENDERMART_IDENTITY__SESSION_TTL_SECS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("session_ttl_secs"), "{err}");
        let err = load(&[("RENDERMART_IDENTITY_URL", "identity:8080")]).unwrap_err();
        assert!(err.to_string().contains("identity_url"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_without_redaction_code_per_setting() {
        let s = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[
                ("RENDERMART_DATABASE_URL", "postgres://app:s3cret@db/rm"),
                ("RENDERMART_BUS", "amqp://u:hunter2@mq/%2f"),
                ("RENDERMART_SERVICE_SECRET", "correct-horse-staple"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.database_url.as_ref().map(|u| u.expose()),
            Some("postgres://app:s3cret@db/rm")
        );
        let shown = s.redacted_toml();
        for secret in ["s3cret", "hunter2", "correct-horse-staple"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("postgres://app:***@db/rm"), "{shown}");
        for service in crate::services::all() {
            assert!(
                shown.contains(&format!("[{}]", service.name)),
                "every service's section is shown ({}): {shown}",
                service.name
            );
        }
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    /// A provider key in a nested optional table is redacted like any other secret, and
    /// the unset optional tables do not hide their service's section.
    #[test]
    fn a_provider_key_is_redacted_in_its_section() {
        let s = Settings::load(
            "/nonexistent.toml".as_ref(),
            env(&[(
                "RENDERMART_STUDIO__PROVIDERS__OPENAI__API_KEY",
                "sk-topsecret",
            )]),
            &[],
        )
        .unwrap();
        let shown = s.redacted_toml();
        assert!(!shown.contains("sk-topsecret"), "{shown}");
        assert!(shown.contains("[studio.providers.openai]"), "{shown}");
    }

    #[test]
    fn settings_changed_in_code_reach_the_services() {
        let s = Settings::default().with("identity.login_per_ip.max", 7);
        let identity: IdentityConfig = s.section("identity").unwrap();
        assert_eq!(identity.login_per_ip.max, 7);
    }
}

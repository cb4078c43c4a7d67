//! TSIG keys (RFC 8945): the shared secrets that authenticate RFC 2136 updates, read from and
//! written in BIND's `key` statement syntax so that operators can hand the same file to BIND,
//! `nsupdate -k` and ragw.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as HickoryTsigAlgorithm;

use super::DnsError;

/// Seconds of clock difference a signature tolerates; what BIND, nsupdate, lego and certbot use.
pub const DEFAULT_FUDGE: u16 = 300;

/// The HMAC algorithms hickory can compute. Truncated MACs and the legacy MD5/SHA-1 algorithms are
/// refused when a key is read, not at the first update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    pub const ALL: [TsigAlgorithm; 3] = [Self::HmacSha256, Self::HmacSha384, Self::HmacSha512];

    /// The name BIND and RFC 8945 use (`hmac-sha256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }

    /// Length of a full MAC, which is also the secret length [`TsigKey::generate`] uses.
    pub fn mac_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    pub(crate) fn to_hickory(self) -> HickoryTsigAlgorithm {
        match self {
            Self::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            Self::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            Self::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }

    pub(crate) fn from_hickory(alg: &HickoryTsigAlgorithm) -> Option<Self> {
        match alg {
            HickoryTsigAlgorithm::HmacSha256 => Some(Self::HmacSha256),
            HickoryTsigAlgorithm::HmacSha384 => Some(Self::HmacSha384),
            HickoryTsigAlgorithm::HmacSha512 => Some(Self::HmacSha512),
            _ => None,
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TsigAlgorithm {
    type Err = DnsError;

    /// Accepts the spellings operators meet: `hmac-sha256`, `HMAC-SHA256`, `hmac-sha256.` (lego).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().trim_end_matches('.').to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == normalized)
            .ok_or_else(|| {
                DnsError::Key(format!(
                    "unsupported TSIG algorithm {s:?}; use hmac-sha256, hmac-sha384 or hmac-sha512"
                ))
            })
    }
}

/// A TSIG key: its name (a DNS name both sides must agree on), algorithm and secret.
///
/// `Debug` never shows the secret; neither does any error or log line of this crate.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: String,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl TsigKey {
    /// A key from its parts. The name is stored lower-case without a trailing dot (key names
    /// compare case-insensitively on the wire).
    pub fn new(name: &str, algorithm: TsigAlgorithm, secret: Vec<u8>) -> Result<Self, DnsError> {
        let name = normalize_key_name(name)?;
        if secret.is_empty() {
            return Err(DnsError::Key(format!(
                "the secret of key {name:?} is empty"
            )));
        }
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// A key whose secret is given in base64, as in BIND's `secret "…";` or lego's
    /// `RFC2136_TSIG_SECRET`.
    pub fn from_base64(
        name: &str,
        algorithm: TsigAlgorithm,
        secret_base64: &str,
    ) -> Result<Self, DnsError> {
        let compact: String = secret_base64
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let secret = BASE64.decode(compact.as_bytes()).map_err(|_| {
            DnsError::Key(format!("the secret of key {name:?} is not valid base64"))
        })?;
        Self::new(name, algorithm, secret)
    }

    /// A new random key whose secret is as long as the MAC, like `tsig-keygen` makes.
    pub fn generate(name: &str, algorithm: TsigAlgorithm) -> Result<Self, DnsError> {
        let mut secret = vec![0u8; algorithm.mac_len()];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| DnsError::Key("the system random generator failed".to_owned()))?;
        Self::new(name, algorithm, secret)
    }

    /// The key name, lower-case, without the trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    /// The raw secret. Handle with care: it authorizes changes to the zone.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The secret in base64, for handing to clients that take it on their command line or
    /// environment (lego's `RFC2136_TSIG_SECRET`, certbot's credentials file).
    pub fn secret_base64(&self) -> String {
        BASE64.encode(&self.secret)
    }

    /// The key as a BIND `key` statement, exactly what `tsig-keygen` prints:
    /// `key "name" { algorithm hmac-sha256; secret "…"; };`
    pub fn to_bind_config(&self) -> String {
        format!(
            "key \"{}\" {{\n\talgorithm {};\n\tsecret \"{}\";\n}};\n",
            self.name,
            self.algorithm,
            self.secret_base64()
        )
    }

    /// Every `key` statement in BIND configuration text. Other statements (a whole `named.conf`
    /// may be given) are skipped.
    pub fn parse_bind_config(text: &str) -> Result<Vec<TsigKey>, DnsError> {
        parse_bind(text)
    }

    /// The key in a BIND key file: the one named `key_name`, or the only key when `key_name` is
    /// `None`.
    pub fn from_bind_file(path: &Path, key_name: Option<&str>) -> Result<TsigKey, DnsError> {
        let text = fs::read_to_string(path).map_err(|source| DnsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let keys = parse_bind(&text).map_err(|e| match e {
            DnsError::Key(msg) => DnsError::Key(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        select_key(keys, key_name)
            .map_err(|msg| DnsError::Key(format!("{}: {msg}", path.display())))
    }

    /// The key stored at `path`, or a new one (`name`, `algorithm`) written there in BIND syntax
    /// with mode 0600. Returns the key and whether it was created. An existing file wins over
    /// `name` and `algorithm`, so a restart never silently replaces a key clients already have.
    pub fn load_or_generate(
        path: &Path,
        name: &str,
        algorithm: TsigAlgorithm,
    ) -> Result<(TsigKey, bool), DnsError> {
        match fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "the TSIG key file is readable by other users; it should be mode 0600"
                    );
                }
                let key = Self::from_bind_file(path, None)?;
                if key.name != normalize_key_name(name)? {
                    tracing::info!(
                        path = %path.display(),
                        key = %key.name,
                        "using the TSIG key stored in the key file, whose name differs from the configured one"
                    );
                }
                Ok((key, false))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Self::generate(name, algorithm)?;
                ragw_runtime::identity::write_private_file(path, key.to_bind_config()).map_err(
                    |source| DnsError::Io {
                        path: path.to_path_buf(),
                        source,
                    },
                )?;
                tracing::info!(path = %path.display(), key = %key.name, algorithm = %key.algorithm, "generated a TSIG key");
                Ok((key, true))
            }
            Err(source) => Err(DnsError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The key name as a fully qualified DNS name.
    pub(crate) fn dns_name(&self) -> Result<Name, DnsError> {
        let mut name = Name::from_ascii(&self.name)
            .map_err(|e| DnsError::Key(format!("invalid key name {:?}: {e}", self.name)))?;
        name.set_fqdn(true);
        Ok(name)
    }

    pub(crate) fn signer(&self) -> Result<TSigner, DnsError> {
        TSigner::new(
            self.secret.clone(),
            self.algorithm.to_hickory(),
            self.dns_name()?,
            DEFAULT_FUDGE,
        )
        .map_err(|e| DnsError::Key(format!("cannot use key {:?}: {e}", self.name)))
    }
}

fn select_key(mut keys: Vec<TsigKey>, key_name: Option<&str>) -> Result<TsigKey, String> {
    match key_name {
        Some(wanted) => {
            let wanted = normalize_key_name(wanted).map_err(|e| e.to_string())?;
            let pos = keys.iter().position(|k| k.name == wanted);
            match pos {
                Some(i) => Ok(keys.swap_remove(i)),
                None => Err(format!("no key named {wanted:?}")),
            }
        }
        None => match keys.len() {
            1 => Ok(keys.swap_remove(0)),
            0 => Err("no key statement".to_owned()),
            n => Err(format!("{n} key statements; name the one to use")),
        },
    }
}

fn normalize_key_name(name: &str) -> Result<String, DnsError> {
    let trimmed = name.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() {
        return Err(DnsError::Key("the key name is empty".to_owned()));
    }
    Name::from_ascii(bare).map_err(|e| DnsError::Key(format!("invalid key name {name:?}: {e}")))?;
    Ok(bare.to_ascii_lowercase())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semi,
}

fn tokenize(text: &str) -> Result<Vec<Token>, DnsError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = '\0';
                let mut closed = false;
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    prev = c;
                }
                if !closed {
                    return Err(DnsError::Key("unterminated /* comment".to_owned()));
                }
            }
            '{' => tokens.push(Token::Open),
            '}' => tokens.push(Token::Close),
            ';' => tokens.push(Token::Semi),
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                s.push(escaped);
                            }
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(DnsError::Key("unterminated quoted string".to_owned()));
                }
                tokens.push(Token::Quoted(s));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                tokens.push(Token::Word(s));
            }
        }
    }
    Ok(tokens)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

fn parse_bind(text: &str) -> Result<Vec<TsigKey>, DnsError> {
    let tokens = tokenize(text)?;
    let mut keys = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Word(w) if w.eq_ignore_ascii_case("key") => {
                let (key, next) = parse_key_statement(&tokens, i + 1)?;
                keys.push(key);
                i = next;
            }
            Token::Semi => i += 1,
            _ => i = skip_statement(&tokens, i)?,
        }
    }
    Ok(keys)
}

/// Index after the `;` that ends the statement starting at `i`, across nested braces.
fn skip_statement(tokens: &[Token], mut i: usize) -> Result<usize, DnsError> {
    let mut depth = 0usize;
    while i < tokens.len() {
        match tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| DnsError::Key("unbalanced '}'".to_owned()))?;
            }
            Token::Semi if depth == 0 => return Ok(i + 1),
            _ => {}
        }
        i += 1;
    }
    if depth == 0 {
        Ok(i)
    } else {
        Err(DnsError::Key("unbalanced '{'".to_owned()))
    }
}

fn parse_key_statement(tokens: &[Token], mut i: usize) -> Result<(TsigKey, usize), DnsError> {
    let name = match tokens.get(i) {
        Some(Token::Word(w) | Token::Quoted(w)) => w.clone(),
        _ => return Err(DnsError::Key("'key' must be followed by a name".to_owned())),
    };
    i += 1;
    if tokens.get(i) != Some(&Token::Open) {
        return Err(DnsError::Key(format!("key {name:?}: expected '{{'")));
    }
    i += 1;
    let mut algorithm = None;
    let mut secret = None;
    loop {
        match tokens.get(i) {
            Some(Token::Close) => {
                i += 1;
                break;
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("algorithm") => {
                let value = match tokens.get(i + 1) {
                    Some(Token::Word(v) | Token::Quoted(v)) => v,
                    _ => {
                        return Err(DnsError::Key(format!(
                            "key {name:?}: 'algorithm' needs a value"
                        )));
                    }
                };
                algorithm = Some(
                    value
                        .parse::<TsigAlgorithm>()
                        .map_err(|e| DnsError::Key(format!("key {name:?}: {e}")))?,
                );
                i = expect_semi(tokens, i + 2, &name)?;
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("secret") => {
                let value = match tokens.get(i + 1) {
                    Some(Token::Word(v) | Token::Quoted(v)) => v.clone(),
                    _ => {
                        return Err(DnsError::Key(format!(
                            "key {name:?}: 'secret' needs a value"
                        )));
                    }
                };
                secret = Some(value);
                i = expect_semi(tokens, i + 2, &name)?;
            }
            Some(_) => i = skip_statement(tokens, i)?,
            None => return Err(DnsError::Key(format!("key {name:?}: missing '}}'"))),
        }
    }
    // The statement's own terminating ';' is optional in practice; BIND requires it but a
    // missing one at the end of a file should not make an otherwise clear key unusable.
    if tokens.get(i) == Some(&Token::Semi) {
        i += 1;
    }
    let algorithm =
        algorithm.ok_or_else(|| DnsError::Key(format!("key {name:?} has no algorithm")))?;
    let secret = secret.ok_or_else(|| DnsError::Key(format!("key {name:?} has no secret")))?;
    Ok((TsigKey::from_base64(&name, algorithm, &secret)?, i))
}

fn expect_semi(tokens: &[Token], i: usize, name: &str) -> Result<usize, DnsError> {
    if tokens.get(i) == Some(&Token::Semi) {
        Ok(i + 1)
    } else {
        Err(DnsError::Key(format!("key {name:?}: expected ';'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYGEN: &str = "key \"acme-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\";\n};\n";

    #[test]
    fn parses_tsig_keygen_output() {
        let keys = TsigKey::parse_bind_config(KEYGEN).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name(), "acme-update");
        assert_eq!(keys[0].algorithm(), TsigAlgorithm::HmacSha256);
        assert_eq!(keys[0].secret(), b"secret-secret-secret-secret-1234");
    }

    #[test]
    fn round_trips_through_bind_syntax() {
        for alg in TsigAlgorithm::ALL {
            let key = TsigKey::generate("Ragw.Update.", alg).unwrap();
            assert_eq!(key.name(), "ragw.update");
            assert_eq!(key.secret().len(), alg.mac_len());
            let parsed = TsigKey::parse_bind_config(&key.to_bind_config()).unwrap();
            assert_eq!(parsed, vec![key]);
        }
    }

    #[test]
    fn reads_keys_out_of_a_named_conf_with_comments() {
        let conf = r#"
            // a comment with key "fake" { }
            # another
            /* block
               key "nope" { algorithm hmac-sha256; secret "AAAA"; }; */
            options { directory "/tmp"; listen-on port 53 { 127.0.0.1; }; };
            key one { algorithm HMAC-SHA512; secret "AAECAw=="; };
            zone "x" { type primary; file "db"; update-policy { grant one. zonesub TXT; }; };
            key "two." {
                algorithm hmac-sha384;
                secret "BAUG
                        Bw==";
            };
        "#;
        let keys = TsigKey::parse_bind_config(conf).unwrap();
        let names: Vec<_> = keys.iter().map(|k| k.name().to_owned()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(keys[0].algorithm(), TsigAlgorithm::HmacSha512);
        assert_eq!(keys[0].secret(), [0, 1, 2, 3]);
        assert_eq!(keys[1].secret(), [4, 5, 6, 7]);
        assert_eq!(
            select_key(keys.clone(), Some("TWO.")).unwrap().name(),
            "two"
        );
        assert!(select_key(keys.clone(), None).is_err());
        assert!(select_key(keys, Some("three")).is_err());
    }

    #[test]
    fn rejects_bad_keys_with_clear_messages() {
        let cases = [
            (
                "key \"k\" { algorithm hmac-md5; secret \"AAAA\"; };",
                "unsupported",
            ),
            ("key \"k\" { algorithm hmac-sha256; };", "no secret"),
            ("key \"k\" { secret \"AAAA\"; };", "no algorithm"),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"!!\"; };",
                "base64",
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"AAAA\" }",
                "expected ';'",
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"AAAA\";",
                "missing",
            ),
            (
                "key \"k\" { algorithm hmac-sha256; secret \"AAAA",
                "unterminated",
            ),
            ("key { };", "followed by a name"),
            ("/* open", "unterminated"),
        ];
        for (text, needle) in cases {
            let err = TsigKey::parse_bind_config(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = TsigKey::new("k", TsigAlgorithm::HmacSha256, b"topsecret".to_vec()).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("topsecret") && !shown.contains(&key.secret_base64()));
    }

    #[test]
    fn algorithm_spellings() {
        assert_eq!(
            "hmac-sha256.".parse::<TsigAlgorithm>().unwrap(),
            TsigAlgorithm::HmacSha256
        );
        assert_eq!(
            "HMAC-SHA384".parse::<TsigAlgorithm>().unwrap(),
            TsigAlgorithm::HmacSha384
        );
        assert!("hmac-sha256-128".parse::<TsigAlgorithm>().is_err());
    }

    #[test]
    fn load_or_generate_creates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns/update.key");
        let (first, created) =
            TsigKey::load_or_generate(&path, "ragw-update", TsigAlgorithm::HmacSha256).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (second, created) =
            TsigKey::load_or_generate(&path, "other-name", TsigAlgorithm::HmacSha512).unwrap();
        assert!(!created);
        assert_eq!(first, second);
    }
}

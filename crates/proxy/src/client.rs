//! The Kubernetes client: kube-rs's, from a kubeconfig or the in-cluster
//! configuration, with kube-proxy's `--master` override and client-go's
//! client-side rate limit (`clientConnection.qps` / `burst`, a token
//! bucket in front of every request) as a tower layer.
//!
//! kube-rs speaks JSON only, so `clientConnection.contentType` cannot ask
//! for protobuf ([`crate::config::content_type_warning`]).

use crate::options::ClientOptions;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// client-go's token bucket: `burst` tokens, refilled at `qps` a second;
/// a request takes one. Starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(qps: f32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps: f64::from(qps),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

/// A tower layer that makes every request wait for a token of a bucket
/// shared by all the services it makes.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimitLayer {
    pub fn new(qps: f32, burst: u32) -> RateLimitLayer {
        RateLimitLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(qps, burst, Instant::now()))),
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
            sleep: None,
            permit: false,
        }
    }
}

/// The service [`RateLimitLayer`] makes: ready once it holds a token and
/// the inner service is ready.
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    permit: bool,
}

impl<S, R> tower::Service<R> for RateLimit<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.permit {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let taken = self
                .bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(Instant::now());
            match taken {
                Ok(()) => self.permit = true,
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.permit = false;
        self.inner.call(req)
    }
}

/// Why the client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{file}: {message}")]
    Kubeconfig { file: String, message: String },
    #[error("--master `{0}` is not a URL")]
    Master(String),
    #[error("{0}")]
    Config(String),
}

/// The client kipvs watches with: the kubeconfig file (else
/// `$KUBECONFIG`/`~/.kube/config` when `--master` is given, else the
/// in-cluster configuration, then the usual inference), its server replaced
/// by `--master`, rate limited per `opts` (a negative QPS: no limit).
pub async fn kube_client(
    kubeconfig: Option<PathBuf>,
    opts: &ClientOptions,
) -> Result<kube::Client, ClientError> {
    let bad_master = |m: &String| ClientError::Master(m.clone());
    let mut config = match kubeconfig {
        Some(path) => {
            let file = path.display().to_string();
            let kc = kube::config::Kubeconfig::read_from(&path).map_err(|e| {
                ClientError::Kubeconfig {
                    file: file.clone(),
                    message: e.to_string(),
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::Kubeconfig {
                    file,
                    message: e.to_string(),
                })?
        }
        None => match (kube::Config::infer().await, &opts.master) {
            (Ok(c), _) => c,
            // kube-proxy talks to --master with no credentials then.
            (Err(_), Some(m)) => kube::Config::new(m.parse().map_err(|_| bad_master(m))?),
            (Err(e), None) => return Err(ClientError::Config(e.to_string())),
        },
    };
    if let Some(m) = &opts.master {
        config.cluster_url = m.parse().map_err(|_| bad_master(m))?;
    }
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(if opts.qps > 0.0 {
        builder
            .with_layer(&RateLimitLayer::new(opts.qps, opts.burst))
            .build()
    } else {
        builder.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_qps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 10, t0);
        for _ in 0..10 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        // 0.2 s later one more token, and only one.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(b.take(t1), Ok(()));
        assert!(b.take(t1).is_err());
        // Idle for a minute: full again, never more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(b.take(t2), Ok(()));
        }
        assert!(b.take(t2).is_err());
    }

    #[test]
    fn a_zero_burst_still_lets_one_request_through() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 0, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert!(b.take(t0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_spaces_requests_out() {
        use tower::{Layer, Service};
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let calls = calls.clone();
            tower::service_fn(move |_: ()| {
                calls.lock().unwrap().push(tokio::time::Instant::now());
                async { Ok::<_, std::convert::Infallible>(()) }
            })
        };
        let mut svc = RateLimitLayer::new(10.0, 2).layer(record);
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            svc.call(()).await.unwrap();
        }
        let at: Vec<u128> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| (*t - start).as_millis())
            .collect();
        // Two at once (the burst), then one every 100 ms.
        assert_eq!(at.len(), 4);
        assert!(at[0] < 5 && at[1] < 5, "{at:?}");
        assert!((95..=110).contains(&at[2]), "{at:?}");
        assert!((195..=210).contains(&at[3]), "{at:?}");
    }
}

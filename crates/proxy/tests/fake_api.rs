//! The fake API server against kube's real client and watcher: list, watch,
//! label selectors, 410 Gone → relist, cut watches → resume.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kipvs_testkit::fake_api::{FakeApiServer, Kind};
use kube::api::{Api, ObjectMeta};
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::time::Duration;

fn service(name: &str, ip: &str, labels: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Collects watcher events until `names` is the set of live Services.
async fn until_names<S>(
    stream: &mut S,
    live: &mut BTreeMap<String, String>,
    names: &[&str],
) -> Vec<&'static str>
where
    S: futures::Stream<Item = Result<Event<Service>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut init: Option<BTreeMap<String, String>> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => {
                    seen.push("init");
                    init = Some(BTreeMap::new());
                }
                Ok(Event::InitApply(s)) => {
                    init.as_mut()
                        .unwrap()
                        .insert(s.metadata.name.clone().unwrap(), String::new());
                }
                Ok(Event::InitDone) => {
                    seen.push("init-done");
                    *live = init.take().unwrap();
                }
                Ok(Event::Apply(s)) => {
                    seen.push("apply");
                    live.insert(s.metadata.name.clone().unwrap(), String::new());
                }
                Ok(Event::Delete(s)) => {
                    seen.push("delete");
                    live.remove(&s.metadata.name.clone().unwrap());
                }
                Err(_) => seen.push("error"),
            }
            if init.is_none() && live.keys().cloned().collect::<Vec<_>>() == want {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {names:?}; live {live:?}, seen {seen:?}"));
    seen
}

#[tokio::test]
async fn kube_watcher_lists_watches_relists_and_resumes() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&service("a", "10.96.0.1", &[]));
    api.apply(&service(
        "other-proxy",
        "10.96.0.9",
        &[("service.kubernetes.io/service-proxy-name", "x")],
    ));

    let services: Api<Service> = Api::all(api.client());
    let cfg = watcher::Config::default().labels(&kipvs_engine::labels::watch_selector(None));
    let mut stream = watcher::watcher(services, cfg).boxed();
    let mut live = BTreeMap::new();

    let seen = until_names(&mut stream, &mut live, &["a"]).await;
    assert_eq!(seen, ["init", "init-done"], "the initial list");

    api.apply(&service("b", "10.96.0.2", &[]));
    assert_eq!(
        until_names(&mut stream, &mut live, &["a", "b"]).await,
        ["apply"]
    );
    assert!(api.delete(Kind::Service, "default", "a"));
    assert_eq!(
        until_names(&mut stream, &mut live, &["b"]).await,
        ["delete"]
    );

    // Cut watches: the watcher resumes from its resourceVersion, no relist.
    let watches = api.watches();
    api.disconnect_watches();
    // The watcher only reconnects while it is polled.
    let polled = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(
        polled.is_err(),
        "no event while reconnecting: {:?}",
        polled.map(|e| e.map(|e| e.is_ok()))
    );
    assert_eq!(api.watches(), watches + 1, "one new watch, no new list");
    api.apply(&service("c", "10.96.0.3", &[]));
    assert_eq!(
        until_names(&mut stream, &mut live, &["b", "c"]).await,
        ["apply"]
    );

    // History compacted: the next watch gets 410 Gone and the watcher relists.
    api.compact();
    let relist = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = Vec::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => seen.push("init"),
                Ok(Event::InitApply(_)) => seen.push("init-apply"),
                Ok(Event::InitDone) => {
                    seen.push("init-done");
                    return seen;
                }
                Ok(_) => seen.push("other"),
                Err(_) => seen.push("error"),
            }
        }
        seen
    })
    .await
    .expect("the watcher relists after 410 Gone");
    assert_eq!(
        relist,
        ["error", "init", "init-apply", "init-apply", "init-done"]
    );
    api.apply(&service("d", "10.96.0.4", &[]));
    assert_eq!(
        until_names(&mut stream, &mut live, &["b", "c", "d"]).await,
        ["apply"]
    );
}

/// kube-proxy's birth cry: one `events.k8s.io/v1` Event, type Normal,
/// reason `Starting`, regarding this node's Node, reported by `kipvs`; a
/// repeat within kube's cache window patches it into a series.
#[tokio::test]
async fn the_agent_records_the_starting_event_on_its_node() {
    use kipvs_proxy::events;
    let api = FakeApiServer::start().await.unwrap();
    let started =
        events::record_starting(api.client(), "node-a", 1, Duration::from_millis(10)).await;
    assert!(started, "the fake accepted the event");
    let recorded = api.recorded_events();
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let e = &recorded[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["metadata"]["namespace"], "default");
    assert!(
        e["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("node-a.")),
        "{e:#}"
    );
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["reason"], "Starting");
    assert_eq!(e["action"], "StartKubeProxy");
    assert_eq!(e["note"], "Starting kipvs.");
    assert_eq!(e["reportingController"], "kipvs");
    assert_eq!(e["reportingInstance"], "node-a");
    assert_eq!(e["regarding"]["kind"], "Node");
    assert_eq!(e["regarding"]["name"], "node-a");
    assert!(e["eventTime"].is_string(), "{e:#}");

    // The same recorder again: a PATCH making it a series of 2.
    let recorder = events::recorder(api.client(), "node-a");
    let reference = events::node_ref("node-a");
    recorder
        .publish(&events::starting(), &reference)
        .await
        .unwrap();
    recorder
        .publish(&events::starting(), &reference)
        .await
        .unwrap();
    let recorded = api.recorded_events();
    assert_eq!(recorded.len(), 2, "one more event, then patched");
    assert_eq!(recorded[1]["series"]["count"], 2, "{:#}", recorded[1]);

    // The verbs used are exactly the role's (kipvs_proxy::source::EVENTS,
    // which deploy/'s test compares with the ClusterRole).
    let mut used = api.event_verbs();
    used.sort_unstable();
    used.dedup();
    let granted: Vec<&str> = kipvs_proxy::source::EVENTS
        .iter()
        .filter(|(group, resource, _)| *group == "events.k8s.io" && *resource == "events")
        .flat_map(|(_, _, verbs)| verbs.iter().copied())
        .collect();
    assert_eq!(used, granted);
    assert_eq!(kipvs_proxy::source::EVENTS.len(), 1, "no core v1 events");

    // No API server at all: false after the attempts, no panic.
    let nowhere =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        events::record_starting(nowhere, "node-a", 2, Duration::from_millis(10)),
    )
    .await
    .expect("gives up in time");
    assert!(!started);
}

#[tokio::test]
async fn lists_come_in_pages_that_kube_follows_to_the_end() {
    let server = FakeApiServer::start().await.unwrap();
    for i in 0..1203u32 {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let labels: &[(&str, &str)] = if i % 2 == 0 { &[("even", "yes")] } else { &[] };
        server.apply(&service(&format!("s{i:04}"), &ip, labels));
    }
    let api: Api<Service> = Api::all(server.client());
    // One page by hand: 500 items and a continue token.
    let page = api
        .list(&kube::api::ListParams::default().limit(500))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 500);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = api
        .list(
            &kube::api::ListParams::default()
                .limit(1000)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 703);
    assert!(rest.metadata.continue_.is_none(), "the last page");
    assert_eq!(
        rest.metadata.resource_version,
        page.metadata.resource_version
    );
    // kube's watcher pages (500 at a time) through a selector too.
    let mut names = Vec::new();
    let mut stream = std::pin::pin!(watcher::watcher(
        api.clone(),
        watcher::Config::default().labels("even=yes")
    ));
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            Event::InitApply(s) => names.push(s.metadata.name.unwrap()),
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(names.len(), 602);
    assert!(
        server.requests() >= 4,
        "two pages by hand, two by the watcher"
    );
}

//! PNG charts of the comparison (plotters): update latency against the
//! number of Services, log-log, one panel per scenario and one line per
//! method; and TCP connect latency (p50 solid, p99 dashed) per backend.
//! And the scale benchmark's: the agent's RSS against Services, with the
//! issue's goals and kube-proxy's RSS as references.

use super::compare::{BACKENDS, Results, SCENARIOS};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 7] = [
    RGBColor(0, 0, 0),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// The y range of a set of positive values, widened to whole decades with
/// room around them, so no point sits on the frame.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1e-3, 1.0);
    }
    let bottom = 10f64.powf((lo / 1.5).log10().floor());
    (
        bottom,
        10f64.powf((hi * 1.5).log10().ceil()).max(bottom * 10.0),
    )
}

/// One legend for the whole picture, in a strip of its own below the
/// panels, so it never hides a point: a line sample and a name per entry.
fn legend_strip(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    entries: &[(String, ShapeStyle)],
) -> Result<()> {
    let font = TextStyle::from(("sans-serif", 15).into_font());
    let (width, _) = area.dim_in_pixel();
    let mut x = 20i32;
    let mut y = 12i32;
    for (name, style) in entries {
        let text_w = area.estimate_text_size(name, &font).map_err(err)?.0 as i32;
        if x + 36 + text_w > width as i32 - 20 {
            x = 20;
            y += 24;
        }
        area.draw(&PathElement::new(vec![(x, y + 8), (x + 28, y + 8)], *style))
            .map_err(err)?;
        area.draw(&Text::new(name.clone(), (x + 36, y), font.clone()))
            .map_err(err)?;
        x += 36 + text_w + 28;
    }
    Ok(())
}

fn x_range(sizes: &[u32]) -> (f64, f64) {
    let lo = sizes.iter().copied().min().unwrap_or(1) as f64;
    let hi = sizes.iter().copied().max().unwrap_or(10) as f64;
    (lo / 1.5, hi * 1.5)
}

fn secs_label(y: &f64) -> String {
    if *y >= 1.0 {
        format!("{y} s")
    } else if *y >= 1e-3 {
        format!("{} ms", (y * 1e3 * 1000.0).round() / 1000.0)
    } else {
        format!("{} µs", (y * 1e6).round())
    }
}

type LogChart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// A log-log chart of seconds against Services, its mesh drawn.
fn log_log<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    caption: &str,
    caption_size: u32,
    x: (f64, f64),
    y: (f64, f64),
) -> Result<LogChart<'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_size))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Services")
        .x_label_formatter(&|x| format!("{}", x.round()))
        .y_label_formatter(&secs_label)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Update latency vs N, one panel per scenario.
pub fn update_chart(path: &Path, r: &Results, sizes: &[u32], backends: &[&str]) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "kipvs vs ipvsadm, iptables, nftables: time per step vs Services (log-log, lower is better)",
            ("sans-serif", 24),
        )
        .map_err(err)?;
    let methods: Vec<&str> = BACKENDS
        .iter()
        .filter(|(b, _)| backends.contains(b))
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    let style = |k: usize| {
        ShapeStyle::from(&COLORS[k % COLORS.len()]).stroke_width(if k == 0 { 3 } else { 2 })
    };
    let (panels, legend) = root.split_vertically(root.dim_in_pixel().1 - 44);
    legend_strip(
        &legend,
        &methods
            .iter()
            .enumerate()
            .map(|(k, m)| ((*m).to_owned(), style(k)))
            .collect::<Vec<_>>(),
    )?;
    let (x0, x1) = x_range(sizes);
    for ((scenario, label), area) in SCENARIOS.iter().zip(panels.split_evenly((2, 2))) {
        let points = |m: &str| -> Vec<(f64, f64)> {
            sizes
                .iter()
                .filter_map(|&n| r.median(n, m, scenario).map(|t| (f64::from(n), t)))
                .collect()
        };
        let (y0, y1) = decades(methods.iter().flat_map(|m| points(m)).map(|p| p.1));
        let mut chart = log_log(&area, label, 20, (x0, x1), (y0, y1))?;
        for (k, m) in methods.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts = points(m);
            chart
                .draw_series(LineSeries::new(pts.clone(), style(k)))
                .map_err(err)?;
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Connect latency vs N per backend: p50 solid, p99 dashed.
pub fn connect_chart(path: &Path, r: &Results, sizes: &[u32], backends: &[&str]) -> Result<()> {
    let root = BitMapBackend::new(path, (1000, 690)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let style = |k: usize| ShapeStyle::from(&COLORS[k % COLORS.len()]).stroke_width(2);
    let (root, legend) = root.split_vertically(690 - 40);
    legend_strip(
        &legend,
        &backends
            .iter()
            .enumerate()
            .map(|(k, b)| ((*b).to_owned(), style(k)))
            .collect::<Vec<_>>(),
    )?;
    let series = |map: &std::collections::BTreeMap<(u32, String), Vec<f64>>, b: &str| {
        sizes
            .iter()
            .filter_map(|&n| {
                map.get(&(n, b.to_owned()))
                    .and_then(|v| super::med(v))
                    .map(|t| (f64::from(n), t))
            })
            .collect::<Vec<_>>()
    };
    let all = backends
        .iter()
        .flat_map(|b| series(&r.p50, b).into_iter().chain(series(&r.p99, b)))
        .map(|p| p.1);
    let (y0, y1) = decades(all);
    let (x0, x1) = x_range(sizes);
    let mut chart = log_log(
        &root,
        "TCP connect latency to the last Service vs Services (p50 solid, p99 dashed)",
        22,
        (x0, x1),
        (y0, y1),
    )?;
    for (k, b) in backends.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(series(&r.p50, b), style(k)))
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(series(&r.p99, b), 6, 4, style(k)))
            .map_err(err)?;
        chart
            .draw_series(
                series(&r.p50, b)
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One size of the scale benchmark, as its chart draws it: the agent's
/// RSS in MiB after convergence and after the churn (None: not measured).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssPoint {
    pub services: u32,
    pub converged: Option<f64>,
    pub churned: Option<f64>,
}

/// The agent's RSS against the number of Services (log x axis, MiB):
/// after convergence and after the churn, per measured size, with issue
/// #16's goals and kube-proxy's measured RSS drawn as references.
pub fn scale_chart(path: &Path, points: &[RssPoint]) -> Result<()> {
    use super::scale::{KUBE_PROXY_RSS_MIB, RSS_GOALS_MIB};
    let series = |pick: fn(&RssPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter_map(|p| pick(p).map(|y| (f64::from(p.services), y)))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let converged = series(|p| p.converged);
    let churned = series(|p| p.churned);
    let goal: Vec<(f64, f64)> = RSS_GOALS_MIB
        .iter()
        .map(|(n, m)| (f64::from(*n), *m))
        .collect();
    let kube_proxy: Vec<(f64, f64)> = KUBE_PROXY_RSS_MIB
        .iter()
        .map(|(n, m)| (f64::from(*n), *m))
        .collect();
    let sizes: Vec<u32> = points
        .iter()
        .map(|p| p.services)
        .chain(RSS_GOALS_MIB.iter().map(|g| g.0))
        .collect();
    let (x0, x1) = x_range(&sizes);
    // Ticks at the sizes themselves, not only at powers of ten.
    let mut ticks: Vec<f64> = sizes.iter().map(|&n| f64::from(n)).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let top = converged
        .iter()
        .chain(&churned)
        .chain(&goal)
        .chain(&kube_proxy)
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        * 1.15;

    let (w, h) = (1000, 690);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (root, legend) = root.split_vertically(h - 40);
    let styles = [
        (
            "kipvs, after convergence",
            ShapeStyle::from(&COLORS[1]).stroke_width(3),
        ),
        (
            "kipvs, after the churn",
            ShapeStyle::from(&COLORS[2]).stroke_width(3),
        ),
        (
            "issue #16 goal",
            ShapeStyle::from(&COLORS[0]).stroke_width(2),
        ),
        (
            "kube-proxy (IPVS), measured",
            ShapeStyle::from(&COLORS[3]).stroke_width(2),
        ),
    ];
    legend_strip(
        &legend,
        &styles
            .iter()
            .map(|(name, style)| ((*name).to_owned(), *style))
            .collect::<Vec<_>>(),
    )?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "kipvs agent RSS vs Services (10 endpoints each, API server source)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(ticks),
            0f64..top.max(1.0),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Services (log scale)")
        .y_desc("RSS (MiB)")
        .x_label_formatter(&|x| format!("{}", x.round()))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    // Each point's value beside it, in its series' color.
    let palette = COLORS;
    let font = TextStyle::from(("sans-serif", 14).into_font());
    let texts: Vec<TextStyle<'_>> = palette.iter().map(|c| font.color(c)).collect();
    // kube-proxy's above right of its point; kipvs's left of theirs (the
    // lines rise from the left, and the two points are often close: the
    // churn's label above, the convergence's below).
    #[derive(Clone, Copy)]
    enum At {
        AboveRight,
        AboveLeft,
        Left,
    }
    let label = |p: (f64, f64), k: usize, at: At| {
        let at = match at {
            At::AboveRight => (6, -20),
            At::AboveLeft => (-38, -26),
            At::Left => (-38, -7),
        };
        EmptyElement::at(p) + Text::new(format!("{:.0}", p.1), at, texts[k].clone())
    };
    // The goal: a dashed line through its points.
    chart
        .draw_series(DashedLineSeries::new(goal.clone(), 8, 5, styles[2].1))
        .map_err(err)?;
    chart
        .draw_series(goal.iter().map(|p| Circle::new(*p, 4, styles[2].1)))
        .map_err(err)?;
    // kube-proxy: points only.
    chart
        .draw_series(
            kube_proxy
                .iter()
                .map(|p| Cross::new(*p, 7, styles[3].1.stroke_width(3))),
        )
        .map_err(err)?;
    chart
        .draw_series(kube_proxy.iter().map(|p| label(*p, 3, At::AboveRight)))
        .map_err(err)?;
    // After the churn: a ring, drawn first, so that the point after
    // convergence stays visible inside it when the two are equal.
    for (pts, k) in [(&churned, 1), (&converged, 0)] {
        let (style, color) = (styles[k].1, COLORS[k + 1]);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|p| {
                if k == 1 {
                    Circle::new(*p, 8, color.stroke_width(2))
                } else {
                    Circle::new(*p, 5, color.filled())
                }
            }))
            .map_err(err)?;
        chart
            .draw_series(
                pts.iter()
                    .map(|p| label(*p, k + 1, if k == 0 { At::Left } else { At::AboveLeft })),
            )
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_leaves_room_around_every_point() {
        let (lo, hi) = decades([0.0100, 0.5, 31.0].into_iter());
        assert_eq!((lo, hi), (1e-3, 100.0));
        let (lo, hi) = decades([0.02, 0.05].into_iter());
        assert_eq!((lo, hi), (1e-2, 0.1));
    }

    #[test]
    fn both_charts_are_drawn_with_their_legend_strip() {
        let mut r = Results::default();
        for (n, t) in [(1000u32, 0.8), (5000, 4.0)] {
            for (scenario, _) in SCENARIOS {
                r.times
                    .insert((n, "kipvs".into(), scenario.into()), vec![t / 100.0]);
                r.times
                    .insert((n, "nftables".into(), scenario.into()), vec![t]);
            }
            r.p50.insert((n, "kipvs".into()), vec![400e-6]);
            r.p99.insert((n, "kipvs".into()), vec![900e-6]);
        }
        let dir = std::env::temp_dir().join(format!("kipvs-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (u, c) = (dir.join("u.png"), dir.join("c.png"));
        update_chart(&u, &r, &[1000, 5000], &["kipvs", "nftables"]).unwrap();
        connect_chart(&c, &r, &[1000, 5000], &["kipvs", "nftables"]).unwrap();
        assert!(std::fs::metadata(&u).unwrap().len() > 10_000);
        assert!(std::fs::metadata(&c).unwrap().len() > 10_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_scale_chart_is_drawn_with_gaps_for_what_was_not_measured() {
        let dir = std::env::temp_dir().join(format!("kipvs-scale-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.png");
        let point = |services, converged, churned| RssPoint {
            services,
            converged,
            churned,
        };
        let points = [
            point(1000, Some(37.0), Some(41.0)),
            point(5000, Some(110.0), None),
            point(50000, None, None),
        ];
        scale_chart(&path, &points).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 10_000);
        // Nothing measured: the references alone.
        scale_chart(&path, &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The PNG chart (plotters): ops/s of W1–W3 per system on a log scale, and W4's p50 beside it.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use crate::record::{REDIS_CEILING, Record, VOLLEY, VOLLEY_EMBEDDED};
use crate::report::{sorted, thousands};

/// plotters' `ab_glyph` backend draws text only with a font registered at
/// run time; DejaVu Sans is on Debian and Ubuntu images by default.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1400, 600);

fn color(system: &str) -> RGBColor {
    match system {
        VOLLEY => RGBColor(31, 119, 180),
        VOLLEY_EMBEDDED => RGBColor(120, 170, 220),
        "dask" => RGBColor(255, 127, 14),
        "celery" => RGBColor(44, 160, 44),
        "ray" => RGBColor(214, 39, 40),
        _ => RGBColor(128, 128, 128),
    }
}

/// Bounds of a log axis holding `values` with room above for labels.
fn log_bounds(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    let low = 10f64.powf((low / 2.0).max(1e-3).log10().floor());
    let high = 10f64.powf((high * 2.0).max(low * 10.0).log10().ceil());
    (low, high)
}

/// Draws the chart into `path`. `Ok(false)`: skipped (no font, or nothing
/// to draw), with a warning; the harness does not fail for a chart.
pub fn draw(path: &Path, records: &[Record], subtitle: &str) -> anyhow::Result<bool> {
    let font = match std::fs::read(FONT_PATH) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("warning: no chart: cannot read the font {FONT_PATH}: {error}");
            return Ok(false);
        }
    };
    // plotters keeps registered fonts for the program's life: leaking one
    // font once is the price of its `&'static` API.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, font)
        .map_err(|_| anyhow!("{FONT_PATH} is not a font plotters can use"))?;

    let ok: Vec<&Record> = sorted(records)
        .into_iter()
        .filter(|record| record.is_ok() && record.system != REDIS_CEILING)
        .collect();
    let workloads: Vec<&str> = ["W1", "W2", "W3"]
        .into_iter()
        .filter(|workload| {
            ok.iter()
                .any(|record| record.workload == *workload && record.ops_per_s.is_some())
        })
        .collect();
    let mut systems: Vec<&str> = Vec::new();
    for record in &ok {
        if workloads.contains(&record.workload.as_str())
            && !systems.contains(&record.system.as_str())
        {
            systems.push(&record.system);
        }
    }
    let latency: Vec<(&str, f64)> = ok
        .iter()
        .filter(|record| record.workload == "W4")
        .filter_map(|record| record.p50_ms.map(|p50| (record.system.as_str(), p50)))
        .filter(|(_, p50)| *p50 > 0.0)
        .collect();
    if workloads.is_empty() && latency.is_empty() {
        eprintln!("warning: no chart: no W1–W4 results");
        return Ok(false);
    }

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow!("{error}"))?;
    let root = root
        .titled(
            &format!("Volley benchmark — {subtitle}"),
            (FONT, 20).into_font(),
        )
        .map_err(|error| anyhow!("{error}"))?;
    let (left, right) = root.split_horizontally(920);

    if !workloads.is_empty() {
        throughput_panel(&left, &ok, &workloads, &systems).map_err(|error| anyhow!("{error}"))?;
    }
    if !latency.is_empty() {
        latency_panel(&right, &latency).map_err(|error| anyhow!("{error}"))?;
    }
    root.present().map_err(|error| anyhow!("{error}"))?;
    Ok(true)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

fn throughput_panel(
    area: &Area<'_>,
    records: &[&Record],
    workloads: &[&str],
    systems: &[&str],
) -> DrawResult {
    let values: Vec<f64> = records
        .iter()
        .filter(|record| workloads.contains(&record.workload.as_str()))
        .filter_map(|record| record.ops_per_s)
        .filter(|value| *value > 0.0)
        .collect();
    let (low, high) = log_bounds(&values);
    let names = ["W1 independent", "W2 chains of 10", "W3 fan-out/in"];
    let labels: Vec<String> = workloads
        .iter()
        .map(|workload| {
            names
                .iter()
                .find(|name| name.starts_with(workload))
                .map_or_else(|| (*workload).to_owned(), |name| (*name).to_owned())
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption("throughput, ops/s (log scale)", (FONT, 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..workloads.len() as f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|value| thousands(*value))
        .label_style((FONT, 14))
        .draw()?;
    category_labels(area, &chart, &labels, low)?;
    let width = 0.8 / systems.len().max(1) as f64;
    for (position, system) in systems.iter().enumerate() {
        let fill = color(system);
        let bars: Vec<(f64, f64)> = workloads
            .iter()
            .enumerate()
            .filter_map(|(index, workload)| {
                records
                    .iter()
                    .find(|record| record.system == *system && record.workload == *workload)
                    .and_then(|record| record.ops_per_s)
                    .filter(|value| *value > 0.0)
                    .map(|value| (index as f64 + 0.1 + position as f64 * width, value))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(left, value)| {
                Rectangle::new(
                    [(*left, low), (*left + width * 0.92, *value)],
                    fill.filled(),
                )
            }))?
            .label(*system)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], fill.filled()));
        chart.draw_series(bars.iter().map(|(left, value)| {
            Text::new(
                thousands(*value),
                (*left, *value * 1.12),
                (FONT, 11).into_font(),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, LogCoord<f64>>,
>;

/// Names under the x axis, centred on each category (plotters' own x labels
/// are numbers at its key points; categories are drawn by hand).
fn category_labels(
    area: &Area<'_>,
    chart: &Chart<'_, '_>,
    labels: &[String],
    low: f64,
) -> DrawResult {
    let style =
        TextStyle::from((FONT, 14).into_font()).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
    for (index, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(index as f64 + 0.5, low));
        let (area_left, area_top) = area.get_base_pixel();
        area.draw(&Text::new(
            label.clone(),
            (x - area_left, y - area_top + 8),
            style.clone(),
        ))?;
    }
    Ok(())
}

fn latency_panel(area: &Area<'_>, latency: &[(&str, f64)]) -> DrawResult {
    let values: Vec<f64> = latency.iter().map(|(_, p50)| *p50).collect();
    let (low, high) = log_bounds(&values);
    let labels: Vec<String> = latency
        .iter()
        .map(|(system, _)| (*system).to_owned())
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption("W4 round trip p50, ms (log scale)", (FONT, 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..latency.len() as f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|value| format!("{value}"))
        .label_style((FONT, 12))
        .draw()?;
    category_labels(area, &chart, &labels, low)?;
    for (index, (system, p50)) in latency.iter().enumerate() {
        let left = index as f64 + 0.15;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(left, low), (left + 0.7, *p50)],
            color(system).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{p50:.2}"),
            (left, *p50 * 1.12),
            (FONT, 12).into_font(),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_bounds_are_powers_of_ten_around_the_values() {
        assert_eq!(log_bounds(&[3_000.0, 45_000.0]), (1_000.0, 100_000.0));
        let (low, high) = log_bounds(&[0.8]);
        assert!(low <= 0.4 && high >= 1.6);
    }

    #[test]
    fn a_chart_is_drawn_when_the_font_exists() {
        if !Path::new(FONT_PATH).exists() {
            return;
        }
        let records = vec![
            Record {
                system: VOLLEY.to_owned(),
                workload: "W1".to_owned(),
                ops_per_s: Some(12_000.0),
                ..Record::default()
            },
            Record {
                system: "dask".to_owned(),
                workload: "W1".to_owned(),
                ops_per_s: Some(3_000.0),
                ..Record::default()
            },
            Record {
                system: VOLLEY.to_owned(),
                workload: "W4".to_owned(),
                p50_ms: Some(0.9),
                ..Record::default()
            },
        ];
        let dir = std::env::temp_dir().join(format!("volley-bench-chart-{}", std::process::id()));
        let path = dir.join("chart.png");
        let drawn = draw(&path, &records, "test").expect("draws");
        assert!(drawn);
        let bytes = std::fs::read(&path).expect("png written");
        assert!(bytes.starts_with(b"\x89PNG"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! `shelfsync-forecast`: how well the service's sell-out model (`shelfsync::forecast`)
//! forecasts an outlet's hourly sales of a SKU, against the naive forecast (the same hour last
//! week), on simulated history with weekday and hour-of-day patterns.
//!
//! The history: `--outlets` shops × `--skus` SKUs, `--weeks` weeks of hourly sales drawn from a
//! Poisson law whose rate is a SKU's base rate (log-uniform over 0.05 to 3 units an hour, most
//! SKUs slow) × a shop's size × the day of the week (weekends busier, each shop its own
//! variation) × the hour of the day (shut from 22:00 to 9:00, a lunch bump, an evening peak,
//! shifted an hour later in some shops) × a growth of 1 % a week, with a Sunday-morning rush
//! (+50 % from 10:00 to 13:00) that is not the product of a day and an hour, so the model is
//! not handed the very shape it assumes. The model is fitted to every week but the last; both
//! forecasts are then scored on the last week:
//!
//! - WAPE: the sum over every (shop, SKU, hour) of |forecast - sold| over the units sold;
//! - MAPE by day: the mean of |forecast - sold| / sold over every (shop, SKU, day) that sold;
//! - MAPE by hour: the same over every (shop, SKU, hour) that sold (noisy: most hours sell 0-2);
//! - sell-out: each day at 09:00, a shop holds what the SKU truly sells that day on average;
//!   the mean error, in hours, of the forecast sell-out time against when the simulated sales
//!   actually took the last unit (days it did not sell out by 22:00 count as 22:00).
//!
//! A third row scores the true rates themselves: the floor no forecast can go below, since
//! the sales are random around them.
//!
//! Deterministic for a `--seed`.

use clap::Parser;
use shelfsync::forecast::{Profile, HOURS_PER_WEEK};
use shelfsync_load::mix;

#[derive(Parser)]
#[command(about = "Sell-out model vs same-hour-last-week on simulated weekly sales")]
struct Args {
    #[arg(long, default_value_t = 13)]
    outlets: usize,
    #[arg(long, default_value_t = 400)]
    skus: usize,
    /// Weeks of history; the last is forecast.
    #[arg(long, default_value_t = 9)]
    weeks: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct Draws(u64);

impl Draws {
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.0 = mix(self.0);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson by Knuth's product of uniforms (the rates here stay below about 15).
    fn poisson(&mut self, rate: f64) -> f64 {
        if rate <= 0.0 {
            return 0.0;
        }
        let limit = (-rate).exp();
        let (mut k, mut p) = (0.0, 1.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1.0;
        }
    }
}

/// A shop's pattern: its size, its days, and whether its day runs an hour late.
struct Shop {
    size: f64,
    days: [f64; 7],
    late: bool,
}

const DAYS: [f64; 7] = [0.85, 0.8, 0.85, 0.9, 1.05, 1.35, 1.4];

fn hour_shape(h: usize, late: bool) -> f64 {
    let h = if late && h > 0 { h - 1 } else { h };
    match h {
        9..=11 => 0.6,
        12..=14 => 1.2,
        15..=17 => 0.8,
        18..=21 => 1.6,
        _ => 0.0,
    }
}

/// The true rate of a SKU with base `base` at `shop` in hour `t` of the history.
fn rate(base: f64, shop: &Shop, t: usize) -> f64 {
    let slot = t % HOURS_PER_WEEK;
    let (d, h) = (slot / 24, slot % 24);
    if !(9..22).contains(&h) {
        return 0.0;
    }
    let rush = if d == 6 && (10..13).contains(&h) {
        1.5
    } else {
        1.0
    };
    let growth = 1.01f64.powi((t / HOURS_PER_WEEK) as i32);
    base * shop.size * shop.days[d] * hour_shape(h, shop.late) * rush * growth
}

#[derive(Default)]
struct Score {
    abs_err: f64,
    sold: f64,
    day_pct: Vec<f64>,
    hour_pct: Vec<f64>,
    sell_out_hours: Vec<f64>,
}

impl Score {
    fn add_day(&mut self, forecast: &[f64], actual: &[f64]) {
        for (f, a) in forecast.iter().zip(actual) {
            self.abs_err += (f - a).abs();
            self.sold += a;
            if *a > 0.0 {
                self.hour_pct.push((f - a).abs() / a);
            }
        }
        let (f, a): (f64, f64) = (forecast.iter().sum(), actual.iter().sum());
        if a > 0.0 {
            self.day_pct.push((f - a).abs() / a);
        }
    }

    fn line(&self, name: &str) -> String {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        format!(
            "{name:<28} {:>8.1}% {:>12.1}% {:>13.1}% {:>14.2}",
            100.0 * self.abs_err / self.sold.max(1.0),
            100.0 * mean(&self.day_pct),
            100.0 * mean(&self.hour_pct),
            mean(&self.sell_out_hours),
        )
    }
}

/// When, in hours after 09:00, `stock` units are gone at hourly sales `hours[9..22]`
/// (fractions within the hour the last unit went); 13 (22:00) when they are not.
fn sold_out_at(stock: f64, hours: &[f64]) -> f64 {
    let mut left = stock;
    for (k, &sold) in hours[9..22].iter().enumerate() {
        if sold >= left && sold > 0.0 {
            return k as f64 + left / sold;
        }
        left -= sold;
    }
    13.0
}

fn main() {
    let args = Args::parse();
    if args.weeks < 2 || args.outlets == 0 || args.skus == 0 {
        eprintln!("--weeks must be at least 2 (one to fit, one to forecast), --outlets and --skus at least 1");
        std::process::exit(2);
    }
    let mut draws = Draws(mix(args.seed));
    let shops: Vec<Shop> = (0..args.outlets)
        .map(|_| Shop {
            size: 0.6 + 0.8 * draws.uniform(),
            days: DAYS.map(|d| d * (0.9 + 0.2 * draws.uniform())),
            late: draws.uniform() < 0.4,
        })
        .collect();
    let hours = args.weeks * HOURS_PER_WEEK;
    let fit_hours = hours - HOURS_PER_WEEK;
    // The model, the same hour last week, and the true rates.
    let mut scores: [Score; 3] = Default::default();
    let mut series = vec![0.0; hours];
    for shop in &shops {
        for _ in 0..args.skus {
            // Log-uniform over 0.05 to 3 units an hour.
            let base = 0.05 * (60f64).powf(draws.uniform());
            for (t, x) in series.iter_mut().enumerate() {
                *x = draws.poisson(rate(base, shop, t));
            }
            let profile = Profile::fit(&series[..fit_hours], 0);
            for day in 0..7 {
                let start = fit_hours + day * 24;
                let actual = &series[start..start + 24];
                let forecasts: [Vec<f64>; 3] = [
                    (start..start + 24).map(|t| profile.rate(t)).collect(),
                    (start..start + 24)
                        .map(|t| series[t - HOURS_PER_WEEK])
                        .collect(),
                    (start..start + 24).map(|t| rate(base, shop, t)).collect(),
                ];
                // Sell-out from 09:00 with a day's true mean sales in stock.
                let stock = forecasts[2].iter().sum::<f64>().round();
                let truth = sold_out_at(stock, actual);
                for (score, forecast) in scores.iter_mut().zip(&forecasts) {
                    score.add_day(forecast, actual);
                    if stock >= 1.0 {
                        let error = (sold_out_at(stock, forecast) - truth).abs();
                        score.sell_out_hours.push(error);
                    }
                }
            }
        }
    }
    println!(
        "{} shops x {} SKUs, {} weeks of hourly sales (seed {}); the last week forecast from the {} before",
        args.outlets, args.skus, args.weeks, args.seed, args.weeks - 1
    );
    println!(
        "{:<28} {:>9} {:>13} {:>14} {:>14}",
        "forecast", "WAPE", "MAPE by day", "MAPE by hour", "sell-out, h"
    );
    let names = [
        "model (day x hour, weighted)",
        "same hour last week",
        "the true rates (the floor)",
    ];
    for (score, name) in scores.iter().zip(names) {
        println!("{}", score.line(name));
    }
    let model = &scores[0];
    println!(
        "units sold in the forecast week: {:.0}; (shop, SKU, day)s that sold: {}",
        model.sold,
        model.day_pct.len()
    );
}

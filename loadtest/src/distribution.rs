//! SIPp's statistical distributions (`<pause distribution=...>`,
//! `<sample>`): their draws and the 99th percentile SIPp's sanity check
//! looks at. Parameters are named as in SIPp (after GSL's and Wikipedia's
//! pages); times are milliseconds.

/// A distribution and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Fixed(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    Normal {
        mean: f64,
        stdev: f64,
    },
    /// The parameters are the underlying normal's (as GSL's, SIPp's).
    LogNormal {
        mean: f64,
        stdev: f64,
    },
    Exponential {
        mean: f64,
    },
    /// Scale `lambda`, shape `k`.
    Weibull {
        lambda: f64,
        k: f64,
    },
    /// Shape `k`, scale (least value) `x_m`.
    Pareto {
        k: f64,
        x_m: f64,
    },
    /// The generalized Pareto distribution.
    GPareto {
        shape: f64,
        scale: f64,
        location: f64,
    },
    /// Shape `k`, scale `theta`.
    Gamma {
        k: f64,
        theta: f64,
    },
    /// Failures before the `n`th success of trials that succeed with
    /// probability `p`.
    NegBin {
        p: f64,
        n: f64,
    },
}

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874_040_841;

impl Distribution {
    /// SIPp's name for it (in errors).
    pub fn name(&self) -> &'static str {
        match self {
            Distribution::Fixed(_) => "fixed",
            Distribution::Uniform { .. } => "uniform",
            Distribution::Normal { .. } => "normal",
            Distribution::LogNormal { .. } => "lognormal",
            Distribution::Exponential { .. } => "exponential",
            Distribution::Weibull { .. } => "weibull",
            Distribution::Pareto { .. } => "pareto",
            Distribution::GPareto { .. } => "gpareto",
            Distribution::Gamma { .. } => "gamma",
            Distribution::NegBin { .. } => "negbin",
        }
    }

    /// Its mean (infinite where it has none: a heavy Pareto tail).
    pub fn mean(&self) -> f64 {
        match *self {
            Distribution::Fixed(v) => v,
            Distribution::Uniform { min, max } => (min + max) / 2.0,
            Distribution::Normal { mean, .. } | Distribution::Exponential { mean } => mean,
            Distribution::LogNormal { mean, stdev } => (mean + stdev * stdev / 2.0).exp(),
            Distribution::Weibull { lambda, k } => lambda * ln_gamma(1.0 + 1.0 / k).exp(),
            Distribution::Pareto { k, x_m } if k > 1.0 => k * x_m / (k - 1.0),
            Distribution::GPareto {
                shape,
                scale,
                location,
            } if shape < 1.0 => location + scale / (1.0 - shape),
            Distribution::Pareto { .. } | Distribution::GPareto { .. } => f64::INFINITY,
            Distribution::Gamma { k, theta } => k * theta,
            Distribution::NegBin { p, n } => n * (1.0 - p) / p,
        }
    }

    /// Whether the parameters make a distribution (a positive shape or
    /// scale where one is needed, a probability in (0, 1]).
    pub fn check(&self) -> Result<(), String> {
        if let Some(v) = self.parameters().into_iter().find(|v| !v.is_finite()) {
            return Err(format!("{v} is not a finite number"));
        }
        let positive = |what: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("{what} must be above 0, not {v}"))
            }
        };
        match *self {
            Distribution::Weibull { lambda, k } => positive("lambda", lambda).and(positive("k", k)),
            Distribution::Pareto { k, x_m } => positive("k", k).and(positive("x_m", x_m)),
            Distribution::GPareto { scale, .. } => positive("scale", scale),
            Distribution::Gamma { k, theta } => positive("k", k).and(positive("theta", theta)),
            Distribution::NegBin { p, n } => {
                positive("n", n)?;
                if p > 0.0 && p <= 1.0 {
                    Ok(())
                } else {
                    Err(format!("p must be above 0 and at most 1, not {p}"))
                }
            }
            _ => Ok(()),
        }
    }

    /// Its parameters, in no particular order.
    fn parameters(&self) -> Vec<f64> {
        match *self {
            Distribution::Fixed(v) => vec![v],
            Distribution::Uniform { min, max } => vec![min, max],
            Distribution::Normal { mean, stdev } | Distribution::LogNormal { mean, stdev } => {
                vec![mean, stdev]
            }
            Distribution::Exponential { mean } => vec![mean],
            Distribution::Weibull { lambda, k } => vec![lambda, k],
            Distribution::Pareto { k, x_m } => vec![k, x_m],
            Distribution::GPareto {
                shape,
                scale,
                location,
            } => vec![shape, scale, location],
            Distribution::Gamma { k, theta } => vec![k, theta],
            Distribution::NegBin { p, n } => vec![p, n],
        }
    }

    /// The 99th percentile (exact where the inverse is closed; for Gamma
    /// and the negative binomial, Wilson-Hilferty from a shape of 1 up,
    /// below it Cantelli's bound, mean + √99 standard deviations, which
    /// no 99th percentile passes): what SIPp's pause sanity check
    /// compares with `INT_MAX` milliseconds.
    pub fn percentile_99(&self) -> f64 {
        match *self {
            Distribution::Fixed(v) => v,
            Distribution::Uniform { min, max } => min + 0.99 * (max - min),
            Distribution::Normal { mean, stdev } => mean + Z99 * stdev,
            Distribution::LogNormal { mean, stdev } => (mean + Z99 * stdev).exp(),
            Distribution::Exponential { mean } => mean * 100f64.ln(),
            Distribution::Weibull { lambda, k } => lambda * 100f64.ln().powf(1.0 / k),
            Distribution::Pareto { k, x_m } => x_m * 100f64.powf(1.0 / k),
            Distribution::GPareto {
                shape,
                scale,
                location,
            } => gpareto_at(shape, scale, location, 0.01),
            Distribution::Gamma { k, theta } => gamma_99(k, k * theta),
            // As the Gamma of its mean and variance (shape mean · p).
            Distribution::NegBin { p, n } => {
                let mean = n * (1.0 - p) / p;
                gamma_99(mean * p, mean)
            }
        }
    }

    /// A draw, with `unit` giving uniform draws in [0, 1).
    pub fn sample(&self, unit: &mut impl FnMut() -> f64) -> f64 {
        // (0, 1]: safe under a logarithm or a negative power.
        let mut open = || 1.0 - unit();
        match *self {
            Distribution::Fixed(v) => v,
            Distribution::Uniform { min, max } => min + (max - min) * unit(),
            Distribution::Normal { mean, stdev } => mean + stdev * gauss(unit),
            Distribution::LogNormal { mean, stdev } => (mean + stdev * gauss(unit)).exp(),
            Distribution::Exponential { mean } => -mean * open().ln(),
            Distribution::Weibull { lambda, k } => lambda * (-open().ln()).powf(1.0 / k),
            Distribution::Pareto { k, x_m } => x_m / open().powf(1.0 / k),
            Distribution::GPareto {
                shape,
                scale,
                location,
            } => gpareto_at(shape, scale, location, open()),
            Distribution::Gamma { k, theta } => gamma(k, unit) * theta,
            // As GSL: a Poisson draw whose mean is Gamma(n) scaled by
            // (1 - p) / p.
            Distribution::NegBin { p, n } => poisson(gamma(n, unit) * (1.0 - p) / p, unit),
        }
    }
}

/// The generalized Pareto value whose upper tail holds the share `tail`
/// (in (0, 1]): its inverse CDF at 1 − tail.
fn gpareto_at(shape: f64, scale: f64, location: f64, tail: f64) -> f64 {
    if shape == 0.0 {
        location - scale * tail.ln()
    } else {
        location + scale * (tail.powf(-shape) - 1.0) / shape
    }
}

/// The 99th percentile of a Gamma of shape `k` and mean `mean`.
fn gamma_99(k: f64, mean: f64) -> f64 {
    if k >= 1.0 {
        let c = 1.0 / (9.0 * k);
        mean * (1.0 - c + Z99 * c.sqrt()).powi(3)
    } else {
        mean + 99f64.sqrt() * mean / k.sqrt()
    }
}

/// A standard normal draw (Box-Muller).
fn gauss(unit: &mut impl FnMut() -> f64) -> f64 {
    let u1 = (1.0 - unit()).max(f64::MIN_POSITIVE);
    let u2 = unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(k, 1) draw (Marsaglia and Tsang; k < 1 boosted by U^(1/k)).
fn gamma(k: f64, unit: &mut impl FnMut() -> f64) -> f64 {
    if k.is_nan() || k <= 0.0 {
        return 0.0;
    }
    if k < 1.0 {
        let u = 1.0 - unit();
        return gamma(k + 1.0, unit) * u.powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    // Each round accepts with probability above 0.95: bounded anyway.
    for _ in 0..1000 {
        let x = gauss(unit);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - unit();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
    d
}

/// ln Γ(x) for x > 0 (Stirling's series, moved up past 10).
fn ln_gamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let x2 = x * x;
    shift + (x - 0.5) * x.ln() - x + 0.5 * std::f64::consts::TAU.ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x2 * x2 * x)
}

/// A Poisson draw of mean `lambda`: by multiplication below 12, else by
/// Hörmann's transformed rejection (PTRS).
fn poisson(lambda: f64, unit: &mut impl FnMut() -> f64) -> f64 {
    if !lambda.is_finite() || lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 12.0 {
        let limit = (-lambda).exp();
        let mut product = 1.0 - unit();
        let mut k = 0.0;
        while product > limit && k < 1000.0 {
            product *= 1.0 - unit();
            k += 1.0;
        }
        return k;
    }
    let slam = lambda.sqrt();
    let loglam = lambda.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    for _ in 0..1000 {
        let u = unit() - 0.5;
        let v = unit();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -lambda + k * loglam - ln_gamma(k + 1.0)
        {
            return k;
        }
    }
    lambda.round()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A fixed-seed uniform source (xorshift).
    fn source(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Mean and variance of `n` draws.
    fn moments(d: Distribution, n: usize) -> (f64, f64) {
        let mut unit = source(0x9e37_79b9_7f4a_7c15);
        let xs: Vec<f64> = (0..n).map(|_| d.sample(&mut unit)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var)
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(1.0)
    }

    #[test]
    fn draws_have_the_distributions_mean_and_variance() {
        let g = |x: f64| ln_gamma(x).exp();
        let cases = [
            // (distribution, mean, variance)
            (
                Distribution::Weibull {
                    lambda: 3.0,
                    k: 4.0,
                },
                3.0 * g(1.25),
                9.0 * (g(1.5) - g(1.25).powi(2)),
            ),
            (
                Distribution::Pareto { k: 5.0, x_m: 2.0 },
                2.5,
                5.0 * 4.0 / (16.0 * 3.0),
            ),
            (
                Distribution::GPareto {
                    shape: 0.2,
                    scale: 2.0,
                    location: 1.0,
                },
                1.0 + 2.0 / 0.8,
                4.0 / (0.64 * 0.6),
            ),
            (Distribution::Gamma { k: 3.0, theta: 2.0 }, 6.0, 12.0),
            (Distribution::Gamma { k: 0.5, theta: 4.0 }, 2.0, 8.0),
            (Distribution::NegBin { p: 0.1, n: 2.0 }, 18.0, 180.0),
            (Distribution::NegBin { p: 0.01, n: 3.5 }, 346.5, 34_650.0),
            (Distribution::Exponential { mean: 900.0 }, 900.0, 810_000.0),
        ];
        for (d, mean, var) in cases {
            assert!(
                close(d.mean(), mean, 1e-9),
                "{d:?}: {} is not its mean",
                d.mean()
            );
            let (m, v) = moments(d, 200_000);
            assert!(close(m, mean, 0.02), "{d:?}: mean {m}, want {mean}");
            assert!(close(v, var, 0.08), "{d:?}: variance {v}, want {var}");
        }
    }

    #[test]
    fn poisson_draws_are_whole_and_have_their_mean_on_both_methods() {
        for lambda in [3.0, 40.0, 5_000.0] {
            let mut unit = source(7);
            let xs: Vec<f64> = (0..100_000).map(|_| poisson(lambda, &mut unit)).collect();
            assert!(xs.iter().all(|x| x.fract() == 0.0 && *x >= 0.0));
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!(close(mean, lambda, 0.01), "{lambda}: mean {mean}");
            assert!(close(var, lambda, 0.05), "{lambda}: variance {var}");
        }
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-10);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-10);
    }

    #[test]
    fn the_99th_percentile_is_what_draws_stay_under() {
        for d in [
            Distribution::Uniform {
                min: 2000.0,
                max: 5000.0,
            },
            Distribution::Normal {
                mean: 60_000.0,
                stdev: 15_000.0,
            },
            Distribution::LogNormal {
                mean: 12.28,
                stdev: 1.0,
            },
            Distribution::Exponential { mean: 900_000.0 },
            Distribution::Weibull {
                lambda: 3.0,
                k: 4.0,
            },
            Distribution::Pareto { k: 1.0, x_m: 2.0 },
            Distribution::GPareto {
                shape: 0.1,
                scale: 5.0,
                location: 0.0,
            },
            Distribution::Gamma { k: 3.0, theta: 2.0 },
            Distribution::NegBin { p: 0.1, n: 2.0 },
        ] {
            let p99 = d.percentile_99();
            let mut unit = source(11);
            let n = 100_000;
            let under = (0..n).filter(|_| d.sample(&mut unit) <= p99).count();
            let share = under as f64 / n as f64;
            assert!(
                (0.985..=0.995).contains(&share),
                "{d:?}: {share} under {p99}"
            );
        }
        assert_eq!(Distribution::Fixed(7.0).percentile_99(), 7.0);
    }

    #[test]
    fn parameters_that_make_no_distribution_are_named() {
        let e = Distribution::Weibull {
            lambda: 3.0,
            k: 0.0,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("k must be above 0"), "{e}");
        let e = Distribution::NegBin { p: 1.5, n: 2.0 }.check().unwrap_err();
        assert!(e.contains("p must be"), "{e}");
        let e = Distribution::Normal {
            mean: f64::NAN,
            stdev: 1.0,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("not a finite number"), "{e}");
        assert!(Distribution::Fixed(f64::INFINITY).check().is_err());
        // A small Gamma shape: the bound stays above the true 99th
        // percentile (2.65e10 for k 0.01, theta 1e11), never negative.
        let p = Distribution::Gamma {
            k: 0.01,
            theta: 1e11,
        }
        .percentile_99();
        assert!(p >= 2.65e10, "{p}");
        assert!(Distribution::Gamma { k: 2.0, theta: 1.0 }.check().is_ok());
    }
}

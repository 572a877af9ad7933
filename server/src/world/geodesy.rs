//! Coordinates and distances on the Earth: the one distance function used
//! everywhere, longitude normalization, antimeridian splitting, and the metric
//! (Earth-centred) coordinates the moving-entity index uses.
//!
//! The Earth is modelled as a sphere of mean radius 6 371 008.8 m. Over the
//! distances the game cares about (metres to kilometres) the error against the
//! WGS 84 ellipsoid is below 0.5 %, far under GPS noise.

use geo::{Distance, Haversine, Line, Point};
use meridian_protocol::LonLat;

/// Mean Earth radius in metres (IUGG), the same one `geo::Haversine` uses.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres between two points (haversine).
///
/// This is the distance function of the game: movement budgets, interest
/// management and area rules all measure with it.
#[must_use]
pub fn distance_m(a: LonLat, b: LonLat) -> f64 {
    Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat))
}

/// Straight-line distance through the Earth equal to an arc of `arc_m` on its
/// surface. Comparing chords is the same as comparing great-circle distances
/// (one is a monotonic function of the other) and needs no trigonometry per
/// pair, which is why the hot proximity checks compare squared chords of
/// `to_ecef` positions.
#[must_use]
pub fn chord_for_arc(arc_m: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (arc_m / (2.0 * EARTH_RADIUS_M)).sin()
}

/// The squared straight-line distance between two `to_ecef` positions.
#[must_use]
pub fn chord2(a: [f64; 3], b: [f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// Longitude wrapped into [-180, 180).
#[must_use]
pub fn normalize_lon(lon: f64) -> f64 {
    let wrapped = (lon + 180.0).rem_euclid(360.0) - 180.0;
    // rem_euclid can round up to exactly 360 for inputs just below a multiple.
    if wrapped >= 180.0 {
        wrapped - 360.0
    } else {
        wrapped
    }
}

/// A point with a finite longitude (any value, wrapped) and a finite latitude in
/// [-90, 90]; `None` otherwise.
#[must_use]
pub fn checked_point(lon: f64, lat: f64) -> Option<LonLat> {
    if lon.is_finite() && lat.is_finite() && (-90.0..=90.0).contains(&lat) {
        Some(LonLat {
            lon: normalize_lon(lon),
            lat,
        })
    } else {
        None
    }
}

/// Earth-centred Cartesian coordinates in metres on the spherical model.
///
/// Straight-line (chord) distance between two such points is within 0.01 % of
/// the great-circle distance below 10 km, and — unlike degrees — is uniform
/// everywhere, including across the antimeridian and at the poles. That makes it
/// the right space for a uniform grid of moving entities.
#[must_use]
pub fn to_ecef(p: LonLat) -> [f64; 3] {
    let (lon, lat) = (p.lon.to_radians(), p.lat.to_radians());
    let (sin_lat, cos_lat) = lat.sin_cos();
    let (sin_lon, cos_lon) = lon.sin_cos();
    [
        EARTH_RADIUS_M * cos_lat * cos_lon,
        EARTH_RADIUS_M * cos_lat * sin_lon,
        EARTH_RADIUS_M * sin_lat,
    ]
}

/// Initial bearing from `a` to `b`, degrees clockwise from north in [0, 360).
#[must_use]
pub fn bearing_deg(a: LonLat, b: LonLat) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlon = (b.lon - a.lon).to_radians();
    let y = dlon.sin() * lat2.cos();
    let x = lat1.cos() * lat2.sin() - lat1.sin() * lat2.cos() * dlon.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// The straight path from `a` to `b` as lon/lat segments, split in two where it
/// crosses the antimeridian so that no segment spans the whole map.
///
/// Paths are assumed short (the movement budget guarantees it), so "crossing" is
/// decided by the shorter way round: a longitude jump over 180° goes the other way.
#[must_use]
pub fn path_segments(a: LonLat, b: LonLat) -> Vec<Line<f64>> {
    let dlon = b.lon - a.lon;
    if dlon.abs() <= 180.0 {
        return vec![Line::new((a.lon, a.lat), (b.lon, b.lat))];
    }
    // Unwrap b next to a, find where the segment meets ±180, and split there.
    let (edge, b_unwrapped) = if dlon > 0.0 {
        (-180.0, b.lon - 360.0)
    } else {
        (180.0, b.lon + 360.0)
    };
    let t = (edge - a.lon) / (b_unwrapped - a.lon);
    let lat_cross = a.lat + t * (b.lat - a.lat);
    vec![
        Line::new((a.lon, a.lat), (edge, lat_cross)),
        Line::new((-edge, lat_cross), (b.lon, b.lat)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lon: f64, lat: f64) -> LonLat {
        LonLat { lon, lat }
    }

    #[test]
    fn distances_are_great_circle_metres() {
        // One degree of latitude is ~111.2 km on the mean sphere.
        assert!((distance_m(p(0.0, 0.0), p(0.0, 1.0)) - 111_195.0).abs() < 1.0);
        // Across the antimeridian the short way round: 0.002° at the equator ≈ 222 m.
        let d = distance_m(p(179.999, 0.0), p(-179.999, 0.0));
        assert!((d - 222.4).abs() < 0.5, "{d}");
        // Near the pole, a quarter turn of longitude is a few metres.
        let d = distance_m(p(0.0, 89.9999), p(90.0, 89.9999));
        assert!(d < 20.0, "{d}");
    }

    #[test]
    fn longitudes_wrap_into_the_half_open_range() {
        assert_eq!(normalize_lon(180.0), -180.0);
        assert_eq!(normalize_lon(-180.0), -180.0);
        assert_eq!(normalize_lon(190.0), -170.0);
        assert_eq!(normalize_lon(-190.0), 170.0);
        assert!((normalize_lon(540.5) - -179.5).abs() < 1e-9);
        assert!(checked_point(f64::NAN, 0.0).is_none());
        assert!(checked_point(0.0, 90.5).is_none());
        assert!(checked_point(f64::INFINITY, 0.0).is_none());
        assert_eq!(checked_point(360.0, 90.0), Some(p(0.0, 90.0)));
    }

    #[test]
    fn chord_distance_matches_great_circle_at_game_scale() {
        for (a, b) in [
            (p(4.89, 52.37), p(4.891, 52.371)),
            (p(179.9995, 10.0), p(-179.9995, 10.0)),
            (p(0.0, 89.9995), p(120.0, 89.9995)),
        ] {
            let (ea, eb) = (to_ecef(a), to_ecef(b));
            let chord =
                ((ea[0] - eb[0]).powi(2) + (ea[1] - eb[1]).powi(2) + (ea[2] - eb[2]).powi(2))
                    .sqrt();
            let arc = distance_m(a, b);
            assert!((chord - arc).abs() < 0.01, "chord {chord} arc {arc}");
        }
    }

    #[test]
    fn paths_across_the_antimeridian_are_split() {
        let segments = path_segments(p(179.9, 1.0), p(-179.9, 3.0));
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].end.x, 180.0);
        assert_eq!(segments[1].start.x, -180.0);
        assert!((segments[0].end.y - 2.0).abs() < 1e-9);
        let segments = path_segments(p(-179.9, 0.0), p(179.9, 0.0));
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].end.x, -180.0);
        assert_eq!(path_segments(p(1.0, 1.0), p(2.0, 2.0)).len(), 1);
    }

    #[test]
    fn bearings_point_the_right_way() {
        assert!((bearing_deg(p(0.0, 0.0), p(0.0, 1.0)) - 0.0).abs() < 1e-6);
        assert!((bearing_deg(p(0.0, 0.0), p(1.0, 0.0)) - 90.0).abs() < 1e-6);
        assert!((bearing_deg(p(179.99, 0.0), p(-179.99, 0.0)) - 90.0).abs() < 1e-3);
    }
}

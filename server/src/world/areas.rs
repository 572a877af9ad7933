//! The static geometry of a world: its areas in an `rstar` R-tree, queried by
//! bounding box and then tested exactly with `geo`.
//!
//! Area polygons are in lon/lat degrees and must not cross the antimeridian
//! (split such an area in two); movement paths that cross it are split before
//! they are tested (`geodesy::path_segments`).

use geo::{BoundingRect, Intersects, Line, Point};
use meridian_protocol::{AreaKind, LonLat};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};
use uuid::Uuid;

use super::geodesy::path_segments;
use crate::store::Area;

/// An area as the tick uses it.
#[derive(Debug, Clone)]
pub struct AreaEntry {
    /// The area's id.
    pub id: Uuid,
    /// Display name, sent in `AreaEvent`.
    pub name: String,
    /// What it does.
    pub kind: AreaKind,
    /// Its shape.
    pub geometry: geo::MultiPolygon<f64>,
    /// For `speed_limit` areas: the limit inside, in m/s.
    pub max_speed_mps: Option<f64>,
}

type Indexed = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// Every area of one world, indexed for point and path queries.
#[derive(Debug, Default)]
pub struct AreaIndex {
    areas: Vec<AreaEntry>,
    tree: RTree<Indexed>,
}

impl AreaIndex {
    /// Index a world's areas. Areas with empty geometry are skipped.
    #[must_use]
    pub fn new(areas: &[Area]) -> Self {
        let mut entries = Vec::with_capacity(areas.len());
        let mut boxes = Vec::with_capacity(areas.len());
        for area in areas {
            let Some(rect) = area.geometry.bounding_rect() else {
                continue;
            };
            let max_speed_mps = area
                .properties
                .get("max_speed_mps")
                .and_then(serde_json::Value::as_f64)
                .filter(|v| v.is_finite() && *v > 0.0);
            boxes.push(GeomWithData::new(
                Rectangle::from_corners([rect.min().x, rect.min().y], [rect.max().x, rect.max().y]),
                entries.len() as u32,
            ));
            entries.push(AreaEntry {
                id: area.id,
                name: area.name.clone(),
                kind: area.kind,
                geometry: area.geometry.clone(),
                max_speed_mps,
            });
        }
        Self {
            areas: entries,
            tree: RTree::bulk_load(boxes),
        }
    }

    /// Every area containing the point (boundary included).
    pub fn containing(&self, p: LonLat) -> impl Iterator<Item = &AreaEntry> + '_ {
        let point = Point::new(p.lon, p.lat);
        self.tree
            .locate_all_at_point(&[p.lon, p.lat])
            .map(|boxed| &self.areas[boxed.data as usize])
            .filter(move |area| area.geometry.intersects(&point))
    }

    /// The lowest `speed_limit` area limit at a point, if any.
    #[must_use]
    pub fn speed_limit_at(&self, p: LonLat) -> Option<f64> {
        self.containing(p)
            .filter(|a| a.kind == AreaKind::SpeedLimit)
            .filter_map(|a| a.max_speed_mps)
            .reduce(f64::min)
    }

    /// Whether the straight path from `a` to `b` touches a `blocked` area.
    #[must_use]
    pub fn path_blocked(&self, a: LonLat, b: LonLat) -> bool {
        path_segments(a, b)
            .iter()
            .any(|segment| self.segment_blocked(segment))
    }

    fn segment_blocked(&self, segment: &Line<f64>) -> bool {
        let envelope = AABB::from_corners(
            [
                segment.start.x.min(segment.end.x),
                segment.start.y.min(segment.end.y),
            ],
            [
                segment.start.x.max(segment.end.x),
                segment.start.y.max(segment.end.y),
            ],
        );
        self.tree
            .locate_in_envelope_intersecting(&envelope)
            .map(|boxed| &self.areas[boxed.data as usize])
            .any(|area| area.kind == AreaKind::Blocked && area.geometry.intersects(segment))
    }

    /// The area with this id.
    #[must_use]
    pub fn of_id(&self, id: Uuid) -> Option<&AreaEntry> {
        self.areas.iter().find(|a| a.id == id)
    }

    /// Every area of a kind.
    pub fn of_kind(&self, kind: AreaKind) -> impl Iterator<Item = &AreaEntry> + '_ {
        self.areas.iter().filter(move |a| a.kind == kind)
    }

    /// How many areas are indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.areas.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.areas.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use geo::{polygon, MultiPolygon};

    /// A square area of `half` degrees around a centre.
    pub(crate) fn square(
        kind: AreaKind,
        lon: f64,
        lat: f64,
        half: f64,
        props: serde_json::Value,
    ) -> Area {
        Area {
            id: Uuid::now_v7(),
            world_id: Uuid::nil(),
            name: format!("{kind:?}"),
            kind,
            geometry: MultiPolygon(vec![polygon![
                (x: lon - half, y: lat - half),
                (x: lon + half, y: lat - half),
                (x: lon + half, y: lat + half),
                (x: lon - half, y: lat + half),
            ]]),
            properties: props,
        }
    }

    fn p(lon: f64, lat: f64) -> LonLat {
        LonLat { lon, lat }
    }

    #[test]
    fn finds_containing_areas_and_the_lowest_speed_limit() {
        let index = AreaIndex::new(&[
            square(AreaKind::Zone, 0.0, 0.0, 1.0, serde_json::json!({})),
            square(
                AreaKind::SpeedLimit,
                0.0,
                0.0,
                0.5,
                serde_json::json!({"max_speed_mps": 3.0}),
            ),
            square(
                AreaKind::SpeedLimit,
                0.2,
                0.0,
                0.5,
                serde_json::json!({"max_speed_mps": 2.0}),
            ),
        ]);
        assert_eq!(index.containing(p(0.0, 0.0)).count(), 3);
        assert_eq!(index.speed_limit_at(p(0.0, 0.0)), Some(2.0));
        assert_eq!(index.speed_limit_at(p(-0.6, 0.0)), None);
        assert_eq!(index.containing(p(5.0, 5.0)).count(), 0);
    }

    #[test]
    fn paths_through_blocked_areas_are_blocked_even_when_both_ends_are_outside() {
        let index = AreaIndex::new(&[square(
            AreaKind::Blocked,
            0.0,
            0.0,
            0.001,
            serde_json::json!({}),
        )]);
        assert!(index.path_blocked(p(-0.002, 0.0), p(0.002, 0.0)));
        assert!(index.path_blocked(p(-0.002, 0.0), p(0.0, 0.0)));
        assert!(!index.path_blocked(p(-0.002, 0.002), p(0.002, 0.002)));
    }

    #[test]
    fn blocked_areas_at_the_antimeridian_block_paths_that_wrap() {
        // A blocked strip just east of -180.
        let strip = Area {
            geometry: MultiPolygon(vec![polygon![
                (x: -180.0, y: -1.0), (x: -179.9995, y: -1.0), (x: -179.9995, y: 1.0), (x: -180.0, y: 1.0),
            ]]),
            ..square(AreaKind::Blocked, 0.0, 0.0, 1.0, serde_json::json!({}))
        };
        let index = AreaIndex::new(&[strip]);
        assert!(index.path_blocked(p(179.9995, 0.0), p(-179.999, 0.0)));
        assert!(!index.path_blocked(p(179.9995, 0.0), p(179.9999, 0.0)));
    }
}

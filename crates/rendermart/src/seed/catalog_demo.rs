//! The store's demo catalog: a bookstore and a print shop, generated deterministically from
//! word lists (no external data), so every seed makes the same products with the same SKUs
//! and stock. All are physical goods: books in hardcover and paperback, prints in a size
//! and a paper.

/// One variant to create, with the stock it starts with (0: never stocked, so it shows
/// out of stock).
pub struct DemoVariant {
    pub sku: String,
    pub name: String,
    pub options: Vec<(&'static str, &'static str)>,
    /// Minor units.
    pub price: i64,
    pub stock: i64,
}

pub struct DemoProduct {
    pub kind: &'static str,
    pub title: String,
    pub description: String,
    pub category: &'static str,
    pub tags: Vec<&'static str>,
    pub variants: Vec<DemoVariant>,
}

/// How many books and prints the demo has.
pub const BOOKS: usize = 130;
pub const PRINTS: usize = 80;

const BOOK_ADJECTIVES: [&str; 13] = [
    "Silent",
    "Crimson",
    "Hidden",
    "Last",
    "Golden",
    "Winter",
    "Broken",
    "Distant",
    "Secret",
    "Burning",
    "Quiet",
    "Iron",
    "Wandering",
];
const BOOK_NOUNS: [&str; 10] = [
    "Harbour", "Garden", "Kingdom", "Lantern", "River", "Archive", "Orchard", "Compass", "Tower",
    "Voyage",
];
/// (category slug, tags, a phrase for the description).
const GENRES: [(&str, [&str; 2], &str); 5] = [
    (
        "fiction",
        ["novel", "literary"],
        "A novel of small lives and large choices",
    ),
    (
        "mystery",
        ["crime", "detective"],
        "A detective story with a puzzle at its heart",
    ),
    (
        "history",
        ["nonfiction", "history"],
        "A history told through the people who lived it",
    ),
    (
        "science",
        ["nonfiction", "science"],
        "An accessible tour of how things work",
    ),
    (
        "travel",
        ["travel", "essays"],
        "Essays from the road, one place at a time",
    ),
];
const AUTHORS: [&str; 8] = [
    "Ada Marlow",
    "Tomas Reyes",
    "Ines Duval",
    "Kofi Mensah",
    "Mei Lin",
    "Oskar Berg",
    "Priya Nair",
    "Lucia Ferri",
];

const PRINT_MOODS: [&str; 10] = [
    "Quiet", "Golden", "Misty", "Stormy", "Bright", "Frozen", "Velvet", "Amber", "Blue", "Midnight",
];
const PRINT_SUBJECTS: [&str; 8] = [
    "Harbour at Dawn",
    "Mountain Lake",
    "City Lights",
    "Desert Dunes",
    "Pine Forest",
    "Lighthouse",
    "Wheat Fields",
    "Coral Reef",
];
/// (category slug, tags).
const PRINT_STYLES: [(&str, [&str; 2]); 4] = [
    ("wall-art", ["landscape", "poster"]),
    ("photography", ["photo", "nature"]),
    ("illustration", ["drawing", "colour"]),
    ("abstract", ["modern", "minimal"]),
];
/// (size, paper, price in minor units).
const PRINT_FORMATS: [(&str, &str, i64); 3] = [
    ("A4", "matte", 1900),
    ("A3", "matte", 2900),
    ("A2", "gloss", 4500),
];

/// Stock for the `n`-th variant of the demo: mostly some, a few low, every 17th none.
fn stock_for(n: usize) -> i64 {
    match n % 17 {
        0 => 0,
        1 | 2 => 1 + (n % 3) as i64,
        _ => 8 + (n * 7 % 40) as i64,
    }
}

/// Every product of the demo, books first, always in the same order.
pub fn products() -> Vec<DemoProduct> {
    let mut all = Vec::with_capacity(BOOKS + PRINTS);
    let mut variant_no = 0usize;
    for i in 0..BOOKS {
        let adjective = BOOK_ADJECTIVES[i % BOOK_ADJECTIVES.len()];
        let noun = BOOK_NOUNS[(i / BOOK_ADJECTIVES.len()) % BOOK_NOUNS.len()];
        let (category, tags, phrase) = GENRES[i % GENRES.len()];
        let author = AUTHORS[i % AUTHORS.len()];
        let title = match i % 3 {
            0 => format!("The {adjective} {noun}"),
            1 => format!("{adjective} {noun}"),
            _ => format!("A {adjective} {noun}"),
        };
        let base = 1_100 + (i as i64 % 9) * 100;
        let variants = [
            ("HC", "Hardcover", "hardcover", base + 1_200),
            ("PB", "Paperback", "paperback", base),
        ]
        .into_iter()
        .map(|(code, name, format, price)| {
            variant_no += 1;
            DemoVariant {
                sku: format!("DEMO-BOOK-{:04}-{code}", i + 1),
                name: name.to_owned(),
                options: vec![("format", format)],
                price,
                stock: stock_for(variant_no),
            }
        })
        .collect();
        all.push(DemoProduct {
            kind: "book",
            title,
            description: format!(
                "{phrase}, by {author}. {} pages; printed and bound to order.",
                180 + (i * 37) % 320
            ),
            category,
            tags: tags.to_vec(),
            variants,
        });
    }
    for i in 0..PRINTS {
        let mood = PRINT_MOODS[i % PRINT_MOODS.len()];
        let subject = PRINT_SUBJECTS[(i / PRINT_MOODS.len()) % PRINT_SUBJECTS.len()];
        let (category, tags) = PRINT_STYLES[i % PRINT_STYLES.len()];
        let variants = PRINT_FORMATS
            .iter()
            .map(|(size, paper, price)| {
                variant_no += 1;
                DemoVariant {
                    sku: format!("DEMO-PRINT-{:04}-{size}-{}", i + 1, paper.to_uppercase()),
                    name: format!("{size} {paper}"),
                    options: vec![("size", size), ("paper", paper)],
                    price: *price + (i as i64 % 5) * 100,
                    stock: stock_for(variant_no),
                }
            })
            .collect();
        all.push(DemoProduct {
            kind: "print",
            title: format!("{mood} {subject}"),
            description: format!(
                "A {} print of a {} scene, on archival paper with a white border.",
                category.replace('-', " "),
                mood.to_lowercase()
            ),
            category,
            tags: tags.to_vec(),
            variants,
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_demo_is_over_two_hundred_distinct_products_with_distinct_skus() {
        let all = products();
        assert!(all.len() >= 200);
        let titles: HashSet<_> = all.iter().map(|p| p.title.clone()).collect();
        assert_eq!(titles.len(), all.len(), "titles are distinct");
        let skus: HashSet<_> = all
            .iter()
            .flat_map(|p| p.variants.iter().map(|v| v.sku.clone()))
            .collect();
        assert_eq!(
            skus.len(),
            all.iter().map(|p| p.variants.len()).sum::<usize>()
        );
        assert!(all.iter().all(|p| p.kind == "book" || p.kind == "print"));
        let stocked = all.iter().flat_map(|p| &p.variants).filter(|v| v.stock > 0);
        assert!(stocked.count() > 400);
    }
}

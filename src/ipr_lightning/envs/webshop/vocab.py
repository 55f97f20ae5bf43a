"""Invented vocabulary for the WebShop-style catalogue generator (`webshop_catalog.py`).

Plain data only. Product types are rows of eight strings per top category:
``(query, breadcrumb, title head, audiences, attributes, options, price range, features)``
where audiences, attributes and features are ", "-separated lists, options is a ", "-separated
list of ``option name=pool key`` (pool keys index `OPTION_POOLS`) and the price range is
``"low-high"`` in dollars. Every string here was written for this project; brand names are
made up. Attributes and option values are lowercase and never contain square brackets.
"""

from __future__ import annotations

CATEGORIES = ("beauty", "food", "fashion", "furniture", "electronics")

SHARED_ATTRIBUTES = {
    "beauty": "high quality, easy use",
    "food": "gluten free, non gmo",
    "fashion": "quality materials, daily wear",
    "furniture": "easy assemble, easy clean",
    "electronics": "easy use, high performance",
}
"""Attributes every type of the category may also carry."""

PRODUCT_TYPES = {
    "beauty": (
        (
            "hair extensions",
            "Beauty & Personal Care › Hair Care › Hair Extensions, Wigs & Accessories › "
            "Hair Extensions",
            "Clip in Hair Extensions",
            "Women, Girls",
            "natural looking, heat resistant, double weft, human hair, synthetic hair, "
            "tangle free, easy apply",
            "color=hair_color, size=hair_length",
            "15-95",
            "Seamless Clips, Full Head Set, Soft Silky Straight Hairpiece, Thick Wavy Layers",
        ),
        (
            "men's deodorant",
            "Beauty & Personal Care › Personal Care › Deodorants & Antiperspirants › Deodorants",
            "Men's Deodorant Stick",
            "",
            "aluminum free, sensitive skin, all day protection, baking soda free, "
            "clinically proven, long lasting, natural ingredients",
            "scent=mens_scent, size=stick_size",
            "5-24",
            "48 Hour Odor Protection, Invisible Solid, Clean Everyday Formula, Gym Bag Ready",
        ),
        (
            "lipstick",
            "Beauty & Personal Care › Makeup › Lips › Lipstick",
            "Matte Liquid Lipstick",
            "Women, Girls",
            "long wearing, highly pigmented, transfer proof, moisturizing formula, "
            "cruelty free, smudge proof, vegan formula",
            "color=lip_color",
            "6-32",
            "Velvet Finish, Precision Doe Foot Applicator, Comfortable Wear, Bold Color Payoff",
        ),
        (
            "liquid foundation",
            "Beauty & Personal Care › Makeup › Face › Foundation",
            "Liquid Foundation",
            "Women",
            "full coverage, oil free, dewy finish, matte finish, spf 15, lightweight formula, "
            "sensitive skin, long lasting",
            "color=skin_shade, size=small_fl",
            "8-46",
            "Buildable Coverage, Pore Blurring Formula, Natural Skin Finish, Pump Bottle",
        ),
        (
            "face moisturizer",
            "Beauty & Personal Care › Skin Care › Face › Creams & Moisturizers › Face Moisturizers",
            "Daily Face Moisturizer",
            "Women, Men",
            "hyaluronic acid, dry skin, oil free, fragrance free, anti aging, "
            "non comedogenic, vitamin c, natural ingredients",
            "size=cream_size",
            "10-62",
            "Whipped Gel Cream, 24 Hour Hydration, Morning and Night Care, Glass Jar",
        ),
        (
            "shampoo",
            "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos",
            "Moisturizing Shampoo",
            "Women, Men",
            "sulfate free, color safe, dry hair, damaged hair, argan oil, hair growth, "
            "paraben free, natural ingredients",
            "scent=scent, size=bottle_size",
            "7-36",
            "Salon Quality Formula, Frizz Taming Care, Gentle Daily Cleanser, Volume Boost",
        ),
        (
            "nail polish",
            "Beauty & Personal Care › Foot, Hand & Nail Care › Nail Art & Polish › Nail Polish",
            "Gel Nail Polish",
            "Women, Girls",
            "quick dry, chip resistant, high gloss, non toxic, uv led, long lasting, salon finish",
            "color=nail_color, item package quantity=pack_qty",
            "5-28",
            "Soak Off Formula, Glossy Shine, Salon Results at Home, Easy Brush",
        ),
        (
            "eyeshadow palette",
            "Beauty & Personal Care › Makeup › Eyes › Eyeshadow",
            "Eyeshadow Palette",
            "Women, Girls",
            "highly pigmented, blendable formula, shimmer finish, matte finish, "
            "cruelty free, travel size, mirror included",
            "style=palette_style",
            "8-46",
            "18 Shades, Buttery Pressed Powder, Day to Night Looks, Magnetic Closure",
        ),
        (
            "makeup brushes",
            "Beauty & Personal Care › Tools & Accessories › Makeup Brushes & Tools › Brush Sets",
            "Makeup Brush Set",
            "Women, Girls",
            "synthetic bristles, soft bristles, dense bristles, travel case, vegan brushes, "
            "wooden handle, cruelty free",
            "color=tool_color",
            "8-42",
            "14 Piece Kit, Foundation and Blending Brushes, Gift Pouch, Flawless Application",
        ),
        (
            "body wash",
            "Beauty & Personal Care › Personal Care › Bath & Bathing Accessories › Bath › "
            "Body Washes",
            "Moisturizing Body Wash",
            "Women, Men",
            "sensitive skin, dry skin, shea butter, sulfate free, dermatologist tested, "
            "coconut oil, natural ingredients",
            "scent=scent, size=bottle_size",
            "5-26",
            "Rich Creamy Lather, Pump Bottle, Soothing Shower Gel, Gentle Daily Cleanse",
        ),
        (
            "perfume",
            "Beauty & Personal Care › Fragrance › Women's › Eau de Parfum",
            "Eau de Parfum Spray",
            "Women",
            "long lasting, floral notes, woody notes, vanilla notes, travel size, gift set, "
            "fresh fragrance",
            "scent=perfume_scent, size=perfume_size",
            "18-96",
            "Elegant Glass Bottle, Signature Fragrance, Day to Evening Scent, Gift Ready Box",
        ),
        (
            "sunscreen",
            "Beauty & Personal Care › Skin Care › Sunscreens & Tanning Products › Sunscreens",
            "Broad Spectrum Sunscreen Lotion",
            "Adults, Kids",
            "spf 50, water resistant, reef safe, oil free, sensitive skin, mineral based, "
            "non greasy",
            "size=bottle_size, item package quantity=pack_qty",
            "7-30",
            "Sheer Finish, Beach and Pool Ready, Everyday Sun Care, Fast Absorbing",
        ),
        (
            "electric toothbrush",
            "Beauty & Personal Care › Oral Care › Toothbrushes & Accessories › "
            "Powered Toothbrushes",
            "Sonic Electric Toothbrush",
            "Adults, Kids",
            "rechargeable battery, smart timer, soft bristles, travel case, deep clean, "
            "sensitive teeth, long lasting",
            "color=device_color",
            "20-92",
            "5 Cleaning Modes, 4 Brush Heads, USB Charging, 40000 Strokes Per Minute",
        ),
        (
            "hair dryer",
            "Beauty & Personal Care › Hair Care › Styling Tools & Appliances › Hair Dryers",
            "Ionic Hair Dryer",
            "Women, Men",
            "fast drying, low noise, lightweight design, diffuser attachment, frizz control, "
            "cool shot, travel size",
            "color=device_color",
            "20-125",
            "1875W Blow Dryer, 3 Heat Settings, Concentrator Nozzle, Foldable Handle",
        ),
    ),
    "food": (
        (
            "gluten free snack bars",
            "Grocery & Gourmet Food › Snack Foods › Bars › Granola & Nut Bars",
            "Snack Bars",
            "",
            "high protein, low sugar, plant based, keto friendly, whole grain, nut free, "
            "individually wrapped",
            "flavor name=bar_flavor, size=count_size",
            "8-36",
            "Chewy Granola Bites, On the Go Snack, Lunch Box Treat, Made with Real Fruit",
        ),
        (
            "ground coffee",
            "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee",
            "Ground Coffee",
            "",
            "fair trade, usda organic, arabica beans, low acid, small batch, rich flavor, "
            "fresh roasted",
            "flavor name=coffee_flavor, size=bag_size",
            "8-42",
            "Smooth Bold Taste, Drip and Pour Over Grind, Resealable Valve Bag, Small Lot Roast",
        ),
        (
            "herbal tea",
            "Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Herbal",
            "Herbal Tea Bags",
            "",
            "caffeine free, usda organic, individually wrapped, sugar free, natural flavors, "
            "compostable bags",
            "flavor name=tea_flavor, item package quantity=pack_qty",
            "5-26",
            "20 Tea Bags, Calming Evening Blend, Hot or Iced, Whole Leaf Herbs",
        ),
        (
            "potato chips",
            "Grocery & Gourmet Food › Snack Foods › Chips & Crisps › Potato Chips",
            "Kettle Cooked Potato Chips",
            "",
            "kettle cooked, low sodium, no artificial flavors, vegan snack, family size, "
            "single serve, thick cut",
            "flavor name=chip_flavor, size=chip_size",
            "4-32",
            "Extra Crunchy, Party Snack, Made with Sunflower Oil, Sharing Bag",
        ),
        (
            "beef jerky",
            "Grocery & Gourmet Food › Snack Foods › Jerky & Dried Meats › Beef",
            "Beef Jerky",
            "",
            "high protein, grass fed, low fat, keto friendly, no preservatives, resealable bag, "
            "small batch",
            "flavor name=jerky_flavor, size=jerky_size",
            "8-46",
            "Tender Strips, Hickory Smoked Slow, Trail and Gym Snack, Marinated Overnight",
        ),
        (
            "gummy candy",
            "Grocery & Gourmet Food › Candy & Chocolate › Gummy Candies",
            "Gummy Candy",
            "",
            "fat free, individually wrapped, real fruit juice, vegan candy, party favor, "
            "bulk candy",
            "flavor name=candy_flavor, size=candy_size",
            "4-26",
            "Soft Chewy Bites, Assorted Shapes, Movie Night Treat, Bright Fruity Colors",
        ),
        (
            "dark chocolate",
            "Grocery & Gourmet Food › Candy & Chocolate › Chocolate › Chocolate Bars",
            "Dark Chocolate Bars",
            "",
            "fair trade, dairy free, keto friendly, low sugar, gift box, sugar free, single origin",
            "flavor name=chocolate_flavor, item package quantity=pack_qty",
            "6-36",
            "Silky Smooth Bar, Bean to Bar, Snap and Share Squares, Rich Cocoa Taste",
        ),
        (
            "olive oil",
            "Grocery & Gourmet Food › Pantry Staples › Cooking & Baking › Oils, Vinegars & "
            "Salad Dressings › Oils › Olive",
            "Extra Virgin Olive Oil",
            "",
            "cold pressed, usda organic, single origin, glass bottle, high polyphenol, "
            "first harvest",
            "size=oil_size",
            "9-48",
            "Peppery Finish, Mediterranean Olives, Dark Bottle Protection, Kitchen Essential",
        ),
        (
            "mixed nuts",
            "Grocery & Gourmet Food › Snack Foods › Nuts & Seeds › Mixed Nuts",
            "Mixed Nuts",
            "",
            "high protein, heart healthy, resealable bag, keto friendly, no added oil, dry roasted",
            "flavor name=nut_flavor, size=nut_size",
            "7-42",
            "Cashews Almonds and Pecans, Snack Jar, Crunchy Roasted Blend, Office Snack",
        ),
        (
            "hot sauce",
            "Grocery & Gourmet Food › Condiments & Salad Dressings › Sauces › Hot Sauce",
            "Hot Sauce",
            "",
            "small batch, low sodium, sugar free, vegan friendly, fermented peppers, all natural",
            "flavor name=sauce_flavor, item package quantity=pack_qty",
            "5-32",
            "Bold Pepper Heat, Taco and Wing Sauce, Glass Woozy Bottle, Tangy Vinegar Kick",
        ),
        (
            "breakfast cereal",
            "Grocery & Gourmet Food › Breakfast Foods › Cereals › Cold Cereals",
            "Breakfast Cereal",
            "",
            "whole grain, high fiber, low sugar, heart healthy, plant protein, family size",
            "flavor name=cereal_flavor, size=cereal_size",
            "4-26",
            "Crunchy Clusters, Family Breakfast, Great with Milk or Yogurt, Toasted Oats",
        ),
        (
            "seasoning blend",
            "Grocery & Gourmet Food › Pantry Staples › Herbs, Spices & Seasonings › "
            "Mixed Spices & Seasonings",
            "Seasoning Blend",
            "",
            "salt free, msg free, all natural, kosher certified, low sodium, resealable pouch",
            "flavor name=spice_flavor, size=spice_size",
            "4-22",
            "Grill and Roast Rub, Shaker Jar, Chef Crafted Blend, Everyday Cooking",
        ),
        (
            "sparkling water",
            "Grocery & Gourmet Food › Beverages › Bottled Beverages, Water & Drink Mixes › "
            "Water › Sparkling Water",
            "Sparkling Water",
            "",
            "zero calorie, sugar free, natural flavors, caffeine free, no sweeteners, "
            "recyclable cans",
            "flavor name=water_flavor, size=can_size",
            "8-36",
            "Crisp Bubbles, Refreshing Fruit Essence, Slim Cans, Fridge Pack",
        ),
        (
            "raw honey",
            "Grocery & Gourmet Food › Pantry Staples › Jams, Jellies & Sweet Spreads › Honey",
            "Raw Honey",
            "",
            "raw unfiltered, usda organic, squeeze bottle, wildflower, single origin, pure honey",
            "size=honey_size",
            "8-42",
            "Local Beekeepers, Golden Spread, Tea and Toast Sweetener, Glass Jar",
        ),
    ),
    "fashion": (
        (
            "women's leggings",
            "Clothing, Shoes & Jewelry › Women › Clothing › Active › Active Leggings",
            "Workout Leggings",
            "Women",
            "high waist, tummy control, squat proof, moisture wicking, four way stretch, "
            "butt lift, machine wash",
            "size=apparel_size, color=apparel_color",
            "12-46",
            "Yoga Pants, Hidden Pocket, Buttery Soft Fabric, Running and Gym",
        ),
        (
            "men's t-shirt",
            "Clothing, Shoes & Jewelry › Men › Clothing › Shirts › T-Shirts",
            "Crew Neck T-Shirt",
            "Men",
            "short sleeve, regular fit, cotton blend, tagless collar, classic fit, "
            "machine wash, pre shrunk",
            "size=apparel_size, color=apparel_color",
            "8-30",
            "Heavyweight Jersey, Everyday Tee, Soft Ringspun Feel, Multipack Basics",
        ),
        (
            "running shoes",
            "Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running › Road Running",
            "Running Shoes",
            "Men, Women",
            "non slip, breathable mesh, arch support, rubber sole, memory foam, "
            "cushioned sole, lightweight design",
            "size=shoe_size, color=shoe_color",
            "30-125",
            "Walking Sneakers, Tennis and Gym Trainers, Lace Up Knit Upper, Road Ready Grip",
        ),
        (
            "maxi dress",
            "Clothing, Shoes & Jewelry › Women › Clothing › Dresses › Casual",
            "Maxi Dress",
            "Women",
            "short sleeve, flowy fit, side pockets, elastic waist, loose fit, machine wash, v neck",
            "size=apparel_size, pattern name=pattern",
            "20-62",
            "Summer Beach Sundress, Tiered Ruffle Hem, Boho Style, Smocked Bodice",
        ),
        (
            "men's jeans",
            "Clothing, Shoes & Jewelry › Men › Clothing › Jeans",
            "Stretch Denim Jeans",
            "Men",
            "slim fit, straight leg, button closure, zip fly, classic fit, machine wash, "
            "stretch fabric",
            "size=jeans_size, color=denim_color",
            "20-72",
            "Five Pocket Styling, Comfort Flex Waistband, Everyday Denim, Faded Wash",
        ),
        (
            "pullover hoodie",
            "Clothing, Shoes & Jewelry › Men › Clothing › Fashion Hoodies & Sweatshirts",
            "Pullover Hoodie",
            "Men, Women",
            "fleece lined, kangaroo pocket, drawstring hood, long sleeve, relaxed fit, "
            "machine wash, soft fleece",
            "size=apparel_size, color=apparel_color",
            "18-56",
            "Hooded Sweatshirt, Ribbed Cuffs, Casual Athletic Top, Midweight Fleece",
        ),
        (
            "women's sandals",
            "Clothing, Shoes & Jewelry › Women › Shoes › Sandals › Flat Sandals",
            "Flat Sandals",
            "Women",
            "open toe, ankle strap, arch support, non slip, faux leather, memory foam, "
            "adjustable buckle",
            "size=shoe_size, color=sandal_color",
            "15-58",
            "Summer Slides, Braided Straps, Beach and Vacation Shoes, Padded Footbed",
        ),
        (
            "baseball cap",
            "Clothing, Shoes & Jewelry › Men › Accessories › Hats & Caps › Baseball Caps",
            "Baseball Cap",
            "Men, Women",
            "adjustable strap, sun protection, low profile, washed cotton, unisex style, "
            "breathable fabric",
            "color=cap_color",
            "8-30",
            "Dad Hat, Curved Brim, Vintage Twill, Outdoor Sports Hat",
        ),
        (
            "tote bag",
            "Clothing, Shoes & Jewelry › Women › Handbags & Wallets › Totes",
            "Shoulder Tote Bag",
            "Women",
            "vegan leather, large capacity, zipper closure, multiple pockets, "
            "adjustable strap, lightweight design",
            "color=bag_color",
            "20-82",
            "Work Handbag, Laptop Compartment, Top Handle Purse, Travel Carryall",
        ),
        (
            "pendant necklace",
            "Clothing, Shoes & Jewelry › Women › Jewelry › Necklaces › Pendant Necklaces",
            "Pendant Necklace",
            "Women, Girls",
            "sterling silver, hypoallergenic metal, gift box, adjustable chain, nickel free, "
            "gold plated",
            "color=metal_color",
            "12-82",
            "Dainty Heart Charm, Birthday Gift Jewelry, Cubic Zirconia Stone, Layering Chain",
        ),
        (
            "wrist watch",
            "Clothing, Shoes & Jewelry › Men › Watches › Wrist Watches",
            "Analog Quartz Watch",
            "Men, Women",
            "water resistant, stainless steel, date display, leather strap, "
            "scratch resistant, luminous hands",
            "color=watch_color",
            "25-155",
            "Minimalist Dial, Classic Dress Watch, Business Casual Style, Slim Case",
        ),
        (
            "athletic socks",
            "Clothing, Shoes & Jewelry › Men › Clothing › Socks › Athletic Socks",
            "Cushioned Athletic Socks",
            "Men, Women",
            "moisture wicking, arch support, cushioned sole, breathable fabric, "
            "reinforced heel, machine wash",
            "size=sock_size, item package quantity=pack_qty",
            "8-32",
            "Crew Socks, Running and Training, Ribbed Cuff, Blister Resistant Knit",
        ),
        (
            "women's pajama set",
            "Clothing, Shoes & Jewelry › Women › Clothing › Lingerie, Sleep & Lounge › "
            "Sleep & Lounge › Sets",
            "Pajama Set",
            "Women",
            "soft fabric, button down, elastic waist, long sleeve, short sleeve, loose fit, "
            "machine wash",
            "size=apparel_size, pattern name=pattern, material type=sleep_material",
            "18-46",
            "Two Piece Sleepwear, Lounge Set, Notch Collar Top, Cozy Nightwear",
        ),
        (
            "men's winter jacket",
            "Clothing, Shoes & Jewelry › Men › Clothing › Jackets & Coats › "
            "Down & Down Alternative",
            "Puffer Jacket",
            "Men",
            "water resistant, zipper closure, detachable hood, windproof shell, fleece lined, "
            "insulated lining",
            "size=apparel_size, color=apparel_color",
            "40-165",
            "Quilted Winter Coat, Packable Warm Outerwear, Stand Collar, Snow and Ski Ready",
        ),
    ),
    "furniture": (
        (
            "tv stand",
            "Home & Kitchen › Furniture › Living Room Furniture › TV & Media Furniture › "
            "Television Stands & Entertainment Centers",
            "TV Stand",
            "",
            "living room, storage space, engineered wood, cable management, open shelves, "
            "tempered glass",
            "color=wood_color, size=tv_stand_size",
            "60-260",
            "Entertainment Center, Media Console Table, Farmhouse Sliding Barn Doors, Low Profile",
        ),
        (
            "office chair",
            "Home & Kitchen › Furniture › Home Office Furniture › Home Office Chairs › Desk Chairs",
            "Ergonomic Office Chair",
            "",
            "lumbar support, adjustable height, breathable mesh, swivel wheels, high back, "
            "padded armrests",
            "color=chair_color, style=chair_style",
            "70-320",
            "Computer Desk Chair, Rolling Task Chair, Tilt Lock, Executive Seat",
        ),
        (
            "bookshelf",
            "Home & Kitchen › Furniture › Living Room Furniture › Bookcases",
            "Open Bookshelf",
            "",
            "storage space, living room, metal frame, anti tip hardware, industrial style, "
            "display shelves",
            "color=wood_color, style=tier_style",
            "40-185",
            "Tall Display Rack, Ladder Shelf, Home Office Organizer, Standing Shelving Unit",
        ),
        (
            "coffee table",
            "Home & Kitchen › Furniture › Living Room Furniture › Tables › Coffee Tables",
            "Coffee Table",
            "",
            "living room, lift top, storage shelf, metal legs, solid wood, hidden compartment",
            "color=wood_color",
            "50-265",
            "Rectangle Cocktail Table, Mid Century Design, Lower Open Shelf, Center Table",
        ),
        (
            "bed frame",
            "Home & Kitchen › Furniture › Bedroom Furniture › Beds, Frames & Bases › Beds",
            "Platform Bed Frame",
            "",
            "no box spring needed, under bed storage, wood slats, metal frame, "
            "upholstered headboard, noise free",
            "size=bed_size, color=upholstery_color",
            "90-420",
            "Heavy Duty Foundation, Wingback Headboard, Modern Bedroom Set, Sturdy Support",
        ),
        (
            "nightstand",
            "Home & Kitchen › Furniture › Bedroom Furniture › Nightstands",
            "Nightstand",
            "",
            "storage drawer, charging station, solid wood, open shelf, compact design, "
            "bedroom furniture",
            "color=wood_color, item package quantity=pair_qty",
            "35-155",
            "Bedside Table, End Table with Drawer, Small Side Table, Modern Night Stand",
        ),
        (
            "bar stools",
            "Home & Kitchen › Furniture › Kitchen & Dining Room Furniture › Stools",
            "Counter Height Bar Stools",
            "",
            "swivel seat, back support, footrest, faux leather, adjustable height, dining room",
            "color=chair_color, size=stool_size",
            "60-255",
            "Set of 2, Kitchen Island Chairs, Upholstered Seat, Pub Stool",
        ),
        (
            "loveseat sofa",
            "Home & Kitchen › Furniture › Living Room Furniture › Sofas & Couches",
            "Loveseat Sofa",
            "",
            "living room, high density foam, solid wood frame, removable cushions, "
            "small spaces, mid century",
            "color=upholstery_color, material type=upholstery_material",
            "200-820",
            "Small Couch, Apartment Sofa, Two Seater, Tufted Back",
        ),
        (
            "shoe rack",
            "Home & Kitchen › Furniture › Entryway Furniture › Shoe Racks",
            "Shoe Rack",
            "",
            "space saving, metal frame, bamboo wood, stackable design, large capacity, "
            "entryway storage",
            "style=tier_style, color=wood_color",
            "20-92",
            "Shoe Organizer, Closet Shoe Shelf, Free Standing Rack, Hallway Storage",
        ),
        (
            "dining table",
            "Home & Kitchen › Furniture › Kitchen & Dining Room Furniture › Tables",
            "Dining Table",
            "",
            "dining room, solid wood, metal legs, farmhouse style, seats four, "
            "scratch resistant top",
            "color=wood_color, size=table_size",
            "120-620",
            "Kitchen Table, Rectangular Dinner Table, Rustic Trestle Base, Family Meals",
        ),
        (
            "computer desk",
            "Home & Kitchen › Furniture › Home Office Furniture › Home Office Desks › "
            "Computer Desks",
            "Computer Desk",
            "",
            "home office, storage shelves, monitor stand, steel frame, small spaces, "
            "headphone hook",
            "size=desk_size, color=wood_color",
            "60-285",
            "Writing Study Table, Gaming Desk, Work From Home Workstation, Simple Laptop Table",
        ),
        (
            "accent chair",
            "Home & Kitchen › Furniture › Living Room Furniture › Chairs › Accent Chairs",
            "Accent Chair",
            "",
            "living room, mid century, velvet fabric, solid wood legs, high density foam, "
            "upholstered seat",
            "color=upholstery_color",
            "90-360",
            "Armchair, Reading Chair, Comfy Side Chair, Bedroom Lounge Chair",
        ),
        (
            "bean bag chair",
            "Home & Kitchen › Furniture › Game & Recreation Room Furniture › Bean Bags",
            "Bean Bag Chair",
            "Adults, Kids",
            "memory foam, removable cover, soft fabric, living room, kids room, "
            "machine washable cover",
            "size=bean_size, color=upholstery_color",
            "40-225",
            "Giant Lounger, Foam Filled Sofa, Dorm Room Seat, Plush Cover",
        ),
        (
            "storage cabinet",
            "Home & Kitchen › Furniture › Living Room Furniture › Cabinets",
            "Storage Cabinet",
            "",
            "adjustable shelves, storage space, double doors, anti tip hardware, "
            "kitchen pantry, bathroom storage",
            "color=wood_color",
            "60-255",
            "Floor Cupboard, Tall Pantry Cabinet, Accent Cabinet, Entryway Organizer",
        ),
    ),
    "electronics": (
        (
            "bluetooth headphones",
            "Electronics › Headphones, Earbuds & Accessories › Headphones › Over-Ear Headphones",
            "Wireless Over Ear Headphones",
            "",
            "wireless bluetooth, noise cancelling, long battery life, built in microphone, "
            "foldable design, hi fi sound",
            "color=device_color",
            "25-205",
            "Deep Bass, Soft Memory Protein Earmuffs, 40 Hour Playtime, Travel Headset",
        ),
        (
            "wireless earbuds",
            "Electronics › Headphones, Earbuds & Accessories › Earbuds › True Wireless",
            "True Wireless Earbuds",
            "",
            "wireless bluetooth, noise cancelling, charging case, water resistant, "
            "touch control, stereo sound",
            "color=device_color",
            "20-155",
            "In Ear Headphones, Sports Earphones, Mini Pods, Clear Calls",
        ),
        (
            "bluetooth speaker",
            "Electronics › Portable Audio & Video › Portable Speakers & Docks › "
            "Portable Bluetooth Speakers",
            "Portable Bluetooth Speaker",
            "",
            "wireless bluetooth, water resistant, deep bass, long battery life, stereo sound, "
            "outdoor use",
            "color=device_color",
            "20-155",
            "24 Hour Playtime, Loud 360 Sound, Shower and Beach Speaker, Party Pairing",
        ),
        (
            "phone case",
            "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
            "Shockproof Phone Case",
            "",
            "drop protection, scratch resistant, raised edges, wireless charging compatible, "
            "slim profile, clear back",
            "size=phone_size, color=phone_case_color",
            "6-32",
            "Military Grade Protection, Soft Silicone Bumper, Anti Yellowing Cover, Grip Sides",
        ),
        (
            "usb c charger",
            "Cell Phones & Accessories › Chargers & Power Adapters › Wall Chargers",
            "USB C Wall Charger",
            "",
            "fast charging, foldable plug, dual port, compact design, overheat protection, "
            "travel friendly",
            "style=charger_style, color=device_color",
            "10-52",
            "Power Delivery Adapter, GaN Charging Block, Phone and Tablet Charger, Cable Included",
        ),
        (
            "hdmi cable",
            "Electronics › Accessories & Supplies › Audio & Video Accessories › Cables › "
            "HDMI Cables",
            "High Speed HDMI Cable",
            "",
            "48gbps bandwidth, high definition, braided nylon, gold plated, ethernet support, "
            "4k resolution",
            "size=cable_length, item package quantity=pack_qty",
            "6-32",
            "Ultra HD Cord, Gaming Console and Monitor Cable, Flexible Jacket, Low Latency",
        ),
        (
            "smart watch",
            "Electronics › Wearable Technology › Smartwatches",
            "Smart Watch",
            "Men, Women",
            "heart rate, sleep tracking, fitness tracker, water resistant, "
            "long battery life, blood oxygen",
            "color=device_color, size=watch_size",
            "30-210",
            "Activity Tracker, Call and Text Notifications, Touch Screen, Step Counter",
        ),
        (
            "laptop stand",
            "Electronics › Computers & Accessories › Laptop Accessories › Laptop Stands",
            "Adjustable Laptop Stand",
            "",
            "aluminum alloy, height adjustable, foldable design, heat dissipation, non slip, "
            "ergonomic design",
            "color=device_color",
            "15-62",
            "Desk Riser, Portable Notebook Holder, Ventilated Platform, Fits 10 to 17 Inch",
        ),
        (
            "wireless mouse",
            "Electronics › Computers & Accessories › Computer Accessories & Peripherals › "
            "Keyboards, Mice & Accessories › Mice",
            "Wireless Mouse",
            "",
            "silent click, ergonomic design, usb receiver, rechargeable battery, "
            "adjustable dpi, plug and play",
            "color=device_color",
            "8-46",
            "Cordless Optical Mouse, Laptop and PC Mouse, Precision Tracking, Slim Travel Mouse",
        ),
        (
            "mechanical keyboard",
            "Electronics › Computers & Accessories › Computer Accessories & Peripherals › "
            "Keyboards, Mice & Accessories › Keyboards",
            "Mechanical Gaming Keyboard",
            "",
            "rgb backlit, hot swappable, anti ghosting, usb c, wireless bluetooth, compact layout",
            "style=switch_style, color=device_color",
            "30-135",
            "75 Percent Layout, Detachable Cable, Double Shot Keycaps, Gaming and Typing",
        ),
        (
            "smart tv",
            "Electronics › Television & Video › Televisions",
            "Smart LED TV",
            "",
            "high definition, 4k ultra hd, hdr support, voice control, built in streaming, "
            "wall mountable",
            "size=tv_size",
            "150-1450",
            "Crisp Color Display, Game Mode, Slim Bezel, Dual Band WiFi",
        ),
        (
            "power bank",
            "Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks",
            "Portable Power Bank",
            "",
            "fast charging, high capacity, led display, usb c, dual output, compact size",
            "style=capacity_style, color=device_color",
            "15-72",
            "External Battery Pack, Travel Charger, Slim Portable Battery, Multi Device Charging",
        ),
        (
            "security camera",
            "Electronics › Camera & Photo › Video Surveillance › Surveillance Cameras › "
            "Dome Cameras",
            "Indoor Security Camera",
            "",
            "night vision, motion detection, two way audio, high definition, cloud storage, "
            "easy install",
            "style=resolution_style, item package quantity=pack_qty",
            "25-125",
            "Pet and Baby Monitor, Pan Tilt View, WiFi Home Camera, Phone App Alerts",
        ),
        (
            "webcam",
            "Electronics › Computers & Accessories › Computer Accessories & Peripherals › "
            "Audio & Video Accessories › Webcams",
            "HD Webcam",
            "",
            "high definition, built in microphone, auto focus, plug and play, wide angle, "
            "privacy cover",
            "style=resolution_style",
            "20-92",
            "Streaming Camera, Video Call Camera, Low Light Correction, Clip On Mount",
        ),
    ),
}

OPTION_POOLS = {
    # sizes
    "apparel_size": "xx-small, x-small, small, medium, large, x-large, xx-large, 3x-large",
    "jeans_size": (
        "28w x 30l, 30w x 30l, 30w x 32l, 32w x 30l, 32w x 32l, 34w x 32l, 34w x 34l, 36w x 32l, "
        "38w x 30l, 40w x 32l"
    ),
    "shoe_size": "6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 12",
    "sock_size": "small, medium, large, x-large",
    "hair_length": "12 inch, 14 inch, 16 inch, 18 inch, 20 inch, 22 inch, 24 inch",
    "stick_size": (
        "2.6 ounce, 2.7 ounce (pack of 2), 3 ounce, 3 ounce (pack of 3), 3.4 ounce (pack of 4)"
    ),
    "small_fl": "0.5 fl oz, 1 fl oz, 1.01 fl oz, 1.35 fl oz",
    "cream_size": "1 ounce, 1.7 ounce, 2 ounce, 2.5 fl oz, 3.4 fl oz, 4 ounce",
    "bottle_size": (
        "3 fl oz, 6.76 fl oz, 8 fl oz, 12 fl oz, 13.5 fl oz, 16.9 fl oz, 22 fl oz, 33.8 fl oz"
    ),
    "perfume_size": "0.33 fl oz, 1 fl oz, 1.7 fl oz, 3.4 fl oz",
    "count_size": (
        "5 count, 6 count, 12 count, 12 count (pack of 2), 15 count, 18 count, 24 count, 30 count"
    ),
    "bag_size": "10 ounce, 12 ounce, 12 ounce (pack of 2), 16 ounce, 20 ounce, 32 ounce, 2 pound",
    "chip_size": (
        "1 ounce (pack of 24), 1.5 ounce (pack of 12), 2 ounce (pack of 8), 5 ounce, 8 ounce, "
        "8.5 ounce (pack of 3), 13 ounce"
    ),
    "jerky_size": "2.85 ounce, 3.25 ounce (pack of 4), 8 ounce, 10 ounce, 1 pound",
    "candy_size": "5 ounce, 7.2 ounce (pack of 6), 12 ounce, 2 pound, 3 pound, 5 pound",
    "oil_size": "8.5 fl oz, 16.9 fl oz, 25.3 fl oz, 33.8 fl oz, 50.7 fl oz, 101 fl oz",
    "nut_size": "1 ounce (pack of 24), 8 ounce, 16 ounce, 1.5 pound, 2.5 pound, 3 pound",
    "cereal_size": "10 ounce, 12 ounce (pack of 2), 14 ounce, 18 ounce, 24 ounce, 2 pound",
    "spice_size": "2.5 ounce, 3 ounce (pack of 3), 4 ounce, 5.5 ounce, 8 ounce, 16 ounce",
    "can_size": (
        "8 fl oz (pack of 15), 12 fl oz (pack of 8), 12 fl oz (pack of 12), "
        "12 fl oz (pack of 24), 16 fl oz (pack of 12)"
    ),
    "honey_size": "12 ounce, 16 ounce, 24 ounce, 32 ounce, 40 ounce, 5 pound",
    "tv_stand_size": "47 inch, 55 inch, 63 inch, 70 inch",
    "bed_size": "twin, twin xl, full, queen, king, california king",
    "stool_size": "24 inch, 26 inch, 29 inch, 30 inch",
    "table_size": "47 inch, 55 inch, 63 inch, 71 inch",
    "desk_size": "32 inch, 40 inch, 47 inch, 55 inch, 63 inch",
    "bean_size": "3 ft, 4 ft, 5 ft, 6 ft, 7 ft",
    "cable_length": "3 ft, 6 ft, 10 ft, 15 ft, 25 ft, 3.3 ft (pack of 2), 6.6 ft (pack of 3)",
    "phone_size": "5.8 inch, 6.1 inch, 6.4 inch, 6.6 inch, 6.7 inch, 6.8 inch",
    "watch_size": "40mm, 41mm, 44mm, 45mm",
    "tv_size": "32 inch, 40 inch, 43 inch, 50 inch, 55 inch, 65 inch, 75 inch",
    # colors
    "apparel_color": (
        "black, white, heather grey, navy blue, jet black, burgundy, olive green, light blue, "
        "charcoal, dusty pink, royal blue, khaki, forest green, wine red"
    ),
    "denim_color": (
        "light wash, medium wash, dark wash, rinse blue, black, stone grey, vintage blue"
    ),
    "shoe_color": (
        "black white, all black, grey blue, navy blue, white, pink, red black, olive green"
    ),
    "sandal_color": "black, tan, white, nude, brown, gold, silver, rose gold",
    "cap_color": "black, navy blue, khaki, white, olive green, red, pink, grey",
    "bag_color": "black, brown, beige, camel, burgundy, dark green, grey, white",
    "metal_color": "gold, silver, rose gold, two tone, white gold",
    "watch_color": (
        "black, silver, gold, rose gold, blue, brown leather, black leather, silver blue"
    ),
    "hair_color": (
        "natural black, off black, dark brown, medium brown, chestnut brown, ash blonde, "
        "honey blonde, platinum blonde, auburn, ombre brown"
    ),
    "lip_color": (
        "ruby red, nude pink, berry, coral, mauve, rosewood, cherry, brick red, plum, dusty rose"
    ),
    "skin_shade": (
        "porcelain, fair, light, light medium, medium, natural beige, warm tan, tan, deep, espresso"
    ),
    "nail_color": (
        "classic red, nude, pastel pink, lavender, midnight blue, emerald, white, black, "
        "glitter gold, coral"
    ),
    "tool_color": "black, pink, white, rose gold, purple, champagne",
    "device_color": (
        "black, white, silver, rose gold, pink, blue, space grey, midnight blue, sage green, "
        "jet black"
    ),
    "phone_case_color": (
        "clear, black, frosted blue, lavender, midnight green, pink, matte black, sky blue"
    ),
    "wood_color": (
        "espresso, walnut, rustic brown, white oak, black, grey wash, natural, cherry, white"
    ),
    "chair_color": "black, grey, white, blue, pink, brown",
    "upholstery_color": (
        "dark grey, light grey, beige, navy blue, emerald green, cream, mustard yellow, "
        "blush pink, teal"
    ),
    # scents
    "scent": (
        "lavender, unscented, fresh cotton, vanilla, eucalyptus mint, coconut, sandalwood, "
        "citrus, ocean breeze, rose, cucumber melon"
    ),
    "mens_scent": (
        "fresh rain, cedar and sage, cool sport, unscented, black pepper, ocean breeze, "
        "mountain spring"
    ),
    "perfume_scent": (
        "floral, vanilla musk, citrus bloom, amber wood, peony, jasmine, white tea, black cherry"
    ),
    # flavors
    "bar_flavor": (
        "chocolate chip, peanut butter, sea salt caramel, almond coconut, dark chocolate cherry, "
        "blueberry vanilla, cinnamon raisin, lemon poppyseed, mint chocolate"
    ),
    "coffee_flavor": (
        "medium roast, dark roast, light roast, french vanilla, hazelnut, breakfast blend, "
        "colombian, decaf house blend, caramel"
    ),
    "tea_flavor": (
        "chamomile, peppermint, lemon ginger, hibiscus, rooibos, chai spice, lavender honey, "
        "turmeric ginger, berry blend"
    ),
    "chip_flavor": (
        "sea salt, salt and vinegar, sour cream and onion, barbecue, jalapeno, sharp cheddar, "
        "sweet chili, original, dill pickle"
    ),
    "jerky_flavor": (
        "original, teriyaki, black pepper, sweet and spicy, hickory smoked, honey bbq, sriracha"
    ),
    "candy_flavor": (
        "assorted fruit, sour cherry, watermelon, strawberry, mixed berry, green apple, "
        "tropical punch, cola"
    ),
    "chocolate_flavor": (
        "72% cacao, 85% cacao, sea salt almond, orange zest, raspberry, mint, espresso, "
        "toffee crunch"
    ),
    "nut_flavor": "lightly salted, unsalted, honey roasted, sea salt, cinnamon, chili lime, smoked",
    "sauce_flavor": (
        "original, habanero, chipotle, garlic, green jalapeno, ghost pepper, mango habanero, smoky"
    ),
    "cereal_flavor": "honey almond, original, cinnamon, berry, cocoa, maple pecan, vanilla",
    "spice_flavor": (
        "garlic herb, lemon pepper, smoky paprika, cajun, everything bagel, mesquite, "
        "italian herb, taco"
    ),
    "water_flavor": "lime, grapefruit, black cherry, lemon, raspberry, mango, pure, watermelon",
    # styles, patterns, quantities, materials
    "palette_style": "nude, smoky, warm tones, cool tones, shimmer, sunset, berry",
    "chair_style": "with footrest, without footrest, with headrest, with flip up arms",
    "tier_style": "3 tier, 4 tier, 5 tier, 6 tier",
    "charger_style": "20w, 30w, 45w, 65w, 100w",
    "switch_style": "red switch, blue switch, brown switch, silent switch",
    "capacity_style": "5000mah, 10000mah, 20000mah, 26800mah, 30000mah",
    "resolution_style": "1080p, 2k, 3k, 4k",
    "pattern": (
        "floral, striped, plaid, solid, leopard print, polka dot, paisley, tie dye, geometric, "
        "camouflage, gingham"
    ),
    "pack_qty": "1, 2, 3, 4, 6, 8, 12, 24",
    "pair_qty": "1, 2",
    "sleep_material": "cotton, satin, flannel, modal, bamboo viscose",
    "upholstery_material": "velvet, linen, faux leather, boucle, chenille",
}
"""Option value pools (", "-separated), lowercase, in the order a product page lists them."""

OPTION_WORDS = {
    "size": "sizes",
    "color": "colors",
    "flavor name": "flavors",
    "style": "styles",
    "scent": "scents",
    "pattern name": "patterns",
    "item package quantity": "pack sizes",
    "material type": "materials",
}
"""Plural nouns for an option name in bullet points ("available in 5 colors")."""

OPTION_PHRASES = {
    "size": ("in size {v}", "size {v}", "in {v} size", "with size: {v}"),
    "color": ("in {v} color", "in the color {v}", "with color: {v}"),
    "flavor name": ("with flavor name: {v}", "in {v} flavor", "in the flavor {v}"),
    "style": ("in {v} style", "with style: {v}", "in the style {v}"),
    "scent": ("with {v} scent", "in scent {v}", "with scent: {v}"),
    "pattern name": ("with pattern name: {v}", "in {v} pattern", "in the pattern {v}"),
    "item package quantity": (
        "with item package quantity: {v}",
        "with a package quantity of {v}",
    ),
    "material type": ("made of {v}", "with material type: {v}", "in {v} material"),
}
"""How a goal instruction asks for an option value ({v})."""

INSTRUCTION_OPENERS = (
    "i need",
    "i am looking for",
    "i'm looking for",
    "i want to buy",
    "find me",
    "i would like",
    "looking for",
    "can you get me",
    "i want",
    "please find me",
    "i'd like to get",
    "search for",
    "get me",
    "i am searching for",
)

MASS_NOUNS = ("coffee", "tea", "jerky", "candy", "chocolate", "oil", "cereal", "water", "honey")
"""Last words of queries that take no article ("i need ground coffee")."""

BRANDS = {
    "beauty": (
        "Aurelune, Velisse, Miravelle, Petalcraft, Sorelle & Co, Dewlane, Glowmere, Kaliora, "
        "Nuvessa, Bellaquin, Rosamund Lab, Silkora, Opaline Beauty, Vireya, Lunaveil, Calmira, "
        "Fernwyn, Elowen Skin, Zaharine, Blushwick, Marivo, Quillora, Tessaly, Brumeau"
    ),
    "food": (
        "Harvest Hollow, Cedar Pantry, Brightgrain, Orchard Lane Provisions, Maple Furrow, "
        "Saltmarsh Kitchen, Goldfen Farms, Kettlebrook, Wildacre, Honeyvale, Crumbwell, "
        "Tandem Acres, Pepperlark, Rustle & Root, Quailridge, Morrow Creek, Baylark Foods, "
        "Thistledown, Copperpot Co, Larkspur Larder, Sprigwell, Ember & Oat, Nutwhistle, "
        "Fennimore Farm"
    ),
    "fashion": (
        "Threadnova, Marlowe & Finch, Kestrel Row, Linenloom, Vantique, Corvella, Stitchwell, "
        "Ombrelle, Halden Supply, Driftmere, Solvane, Peppermoss, Tallis & Reed, Wrenfield, "
        "Norvique, Brisa Lane, Ashgrove Apparel, Cobalt Fox, Juniper Thread, Mistral Knit, "
        "Oduvane, Sablecrest, Hemline Harbor, Trevalyn"
    ),
    "furniture": (
        "Birchloft, Hearthline, Nestwood, Timbercove, Loftmere, Walnut & Wren, Cozyfield, "
        "Ridgeholm, Mossgate, Elmbridge Living, Quarterline, Dovetail Den, Havenloom, Stonewick, "
        "Alderbay, Hollowmere Home, Tallowood, Briarstead, Cinderoak, Northfold, Plankhaven, "
        "Vellmora, Grainway, Settlewick"
    ),
    "electronics": (
        "Zyntro, Auravox, Kinetiq, Pulsewave, Quanthex, Lumitron, Sonexa, Ohmfield, Vextra, "
        "Arcbeam, Tekvora, Nebulink, Wavecrest Audio, Zentrik, Ampliq, Solvix, Bytewell, "
        "Helixon, Orbitone, Dynaflux, Volterra Labs, Chirply, Neonvale, Gridmoth"
    ),
}
"""Invented brand names (", "-separated), 24 per category."""

BULLET_LABELS = (
    "PREMIUM QUALITY",
    "EVERYDAY ESSENTIAL",
    "THOUGHTFUL DESIGN",
    "WHAT SETS IT APART",
    "MADE WITH CARE",
    "WHY YOU WILL LOVE IT",
    "UPGRADED VERSION",
    "PRACTICAL AND STYLISH",
)

ATTRIBUTE_BULLETS = (
    "{label} - Key feature: {attr}. {detail_cap}.",
    "{label}: Made with {attr} in mind, {detail}.",
    "{label} - Shoppers choose it for {attr}; {detail}.",
    "{label}: Built around {attr}, {detail}.",
    "{label} - Designed for {attr}: {detail}.",
    "{label}: Enjoy {attr} every day. {detail_cap}.",
)
"""Bullet templates that name one attribute phrase ({attr}) verbatim."""

CATEGORY_DETAILS = {
    "beauty": (
        "it is gentle enough for a daily routine",
        "it fits easily into a makeup bag or travel kit",
        "it works for every skin and hair type",
        "your self care routine gets a little easier",
    ),
    "food": (
        "it is perfect for lunch boxes, road trips and the office",
        "every batch is checked for freshness",
        "it makes an easy pantry staple",
        "the whole family can enjoy it",
    ),
    "fashion": (
        "it pairs easily with the rest of your wardrobe",
        "you stay comfortable from morning to night",
        "it looks good at work, on weekends and on vacation",
        "it keeps its shape wear after wear",
    ),
    "furniture": (
        "it fits neatly into apartments, dorms and family homes",
        "the sturdy build supports years of use",
        "it blends with modern, rustic and classic decor",
        "setting up takes about thirty minutes",
    ),
    "electronics": (
        "it works with most phones, tablets and laptops",
        "setup takes only a minute",
        "it is ready for work, travel and play",
        "the solid build holds up to daily use",
    ),
}
"""Category-flavoured clauses that finish bullet points."""

CATEGORY_BULLETS = {
    "beauty": "HOW TO USE - Patch test before first use and follow the directions on the package.",
    "food": "STORAGE - Keep sealed in a cool, dry place and enjoy within a few weeks of opening.",
    "fashion": "FIT TIP - Check the size chart before ordering; if in doubt, size up.",
    "furniture": "WHAT IS INCLUDED - All hardware, tools and a step-by-step manual are in the box.",
    "electronics": "WHAT YOU GET - The device, a user manual and friendly customer support.",
}

CATEGORY_SENTENCES = {
    "beauty": (
        "Dermatologist reviewed and free of harsh fillers.",
        "A small amount goes a long way.",
        "It makes a thoughtful gift for birthdays and holidays.",
    ),
    "food": (
        "Made in a facility that follows strict quality standards.",
        "Great as a snack, a side or an ingredient in your favorite recipes.",
        "Packed fresh and shipped quickly to your door.",
    ),
    "fashion": (
        "Please allow a small color difference due to screen settings.",
        "Dress it up or down for any occasion.",
        "Designed in our studio and sewn with care.",
    ),
    "furniture": (
        "Please check the dimensions to make sure it fits your space.",
        "Numbered parts make assembly straightforward.",
        "It brings warmth and order to any room.",
    ),
    "electronics": (
        "Backed by an 18 month warranty and lifetime technical support.",
        "Certified for safety and tested before shipping.",
        "Firmware updates keep it running smoothly.",
    ),
}

DESCRIPTION_OPENERS = (
    "Meet the {brand} {head}, made for people who want more from everyday essentials.",
    "From {brand}: the {head}, with good looks and practical details.",
    "{brand} designed the {head} after listening to thousands of customers.",
    "Upgrade your routine with the {head} by {brand}.",
    "If you are shopping for {query}, the {brand} {head} is a great pick.",
)

DESCRIPTION_ATTRIBUTES = (
    "Shoppers pick it for {attrs}.",
    "Key features include {attrs}.",
    "Expect {attrs} at a price that makes sense.",
    "Highlights: {attrs}.",
)

DESCRIPTION_CLOSERS = (
    "Order today and see the difference.",
    "Backed by friendly customer service.",
    "A great gift idea for friends and family.",
    "Add it to your cart and treat yourself.",
)

REVIEW_TITLES = {
    5: ("Absolutely love it", "Exactly what I needed", "Great value", "Would buy again"),
    4: ("Very good", "Pretty happy with it", "Solid choice", "Good but not perfect"),
    3: ("It's okay", "Average at best", "Does the job", "Mixed feelings"),
    2: ("Disappointed", "Not as described", "Expected more"),
    1: ("Waste of money", "Returned it", "Stopped working quickly"),
}

REVIEW_BODIES = {
    5: (
        "I ordered the {query} from {brand} last month and I am very happy. "
        'Really impressed: "{attr}" is not just marketing.',
        'Second time buying this. The "{attr}" claim is accurate and shipping was fast.',
        "My partner loved it so much that we ordered another one.",
    ),
    4: (
        'Good {query} for the price. "{attr}" holds up, though the packaging could be better.',
        "Works well overall. Took a few days to get used to it.",
        "Happy with it. I would give five stars if it came in more options.",
    ),
    3: (
        'It is fine, nothing special. The "{attr}" part was not as noticeable as I hoped.',
        "Decent {query}, but I have had better from other brands.",
        "Arrived on time and does what it should, no more.",
    ),
    2: (
        'The "{attr}" claim is a stretch. Not sure I would order this again.',
        "Quality feels cheaper than the photos suggest.",
    ),
    1: (
        "Did not work for me at all and the return took weeks.",
        "Arrived damaged and customer service was slow to answer.",
    ),
}

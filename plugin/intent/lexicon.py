"""The small, explicit word lists the rules parser uses (English and Chinese).

Synonyms map a phrase to candidate facet values, tried in order; a candidate counts only if
it is really in the index vocabulary, so one table serves catalogs that say "headphones" and
catalogs that say "earbuds". An empty candidate tuple *protects* a phrase: "蓝牙" (bluetooth)
must never be read as "蓝" (blue).
"""

from __future__ import annotations

# phrase -> (field or None for any facet, candidate values in order of preference)
SYNONYMS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    # genres, English
    "science fiction": ("genres", ("sci-fi",)), "scifi": ("genres", ("sci-fi",)),
    "kids": ("genres", ("children's", "children", "kids")),
    "children": ("genres", ("children's", "children")), "family": ("genres", ("children's", "family")),
    "cartoon": ("genres", ("animation",)), "animated": ("genres", ("animation",)),
    "scary": ("genres", ("horror",)), "romantic": ("genres", ("romance",)),
    "funny": ("genres", ("comedy",)), "noir": ("genres", ("film-noir",)),
    "documentary": ("genres", ("documentary",)), "musicals": ("genres", ("musical",)),
    # genres, Chinese
    "科幻": ("genres", ("sci-fi",)), "恐怖": ("genres", ("horror",)), "喜剧": ("genres", ("comedy",)),
    "动作": ("genres", ("action",)), "爱情": ("genres", ("romance",)), "浪漫": ("genres", ("romance",)),
    "剧情": ("genres", ("drama",)), "惊悚": ("genres", ("thriller",)), "动画": ("genres", ("animation",)),
    "卡通": ("genres", ("animation",)), "儿童": ("genres", ("children's",)),
    "孩子": ("genres", ("children's",)), "小孩": ("genres", ("children's",)),
    "纪录片": ("genres", ("documentary",)), "战争": ("genres", ("war",)), "西部": ("genres", ("western",)),
    "犯罪": ("genres", ("crime",)), "悬疑": ("genres", ("mystery",)), "奇幻": ("genres", ("fantasy",)),
    "冒险": ("genres", ("adventure",)), "歌舞": ("genres", ("musical",)), "音乐剧": ("genres", ("musical",)),
    "黑色电影": ("genres", ("film-noir",)),
    # colors, Chinese (only the "X色" forms: single characters are too ambiguous)
    "红色": ("color", ("red",)), "蓝色": ("color", ("blue",)), "黑色": ("color", ("black",)),
    "白色": ("color", ("white",)), "绿色": ("color", ("green",)), "黄色": ("color", ("yellow",)),
    "粉色": ("color", ("pink",)), "粉红色": ("color", ("pink",)), "灰色": ("color", ("grey", "gray")),
    "紫色": ("color", ("purple",)), "橙色": ("color", ("orange",)), "棕色": ("color", ("brown",)),
    "咖啡色": ("color", ("brown",)), "多色": ("color", ("multicolor",)), "彩色": ("color", ("multicolor",)),
    "银色": ("color", ("silver",)), "金色": ("color", ("gold",)),
    "gray": ("color", ("grey", "gray")), "grey": ("color", ("grey", "gray")),
    # categories
    "蓝牙耳机": ("category", ("headphones", "earbuds", "earphones")),
    "无线耳机": ("category", ("headphones", "earbuds", "earphones")),
    "耳机": ("category", ("headphones", "earbuds", "earphones")),
    "earphones": ("category", ("headphones", "earbuds", "earphones")),
    "earbuds": ("category", ("earbuds", "headphones", "earphones")),
    "headset": ("category", ("headphones", "earbuds")),
    "跑鞋": ("category", ("running shoes", "shoes")), "跑步鞋": ("category", ("running shoes", "shoes")),
    "运动鞋": ("category", ("sneakers", "shoes", "running shoes")), "鞋": ("category", ("shoes",)),
    "sneakers": ("category", ("sneakers", "shoes", "running shoes")),
    "trainers": ("category", ("sneakers", "shoes", "running shoes")),
    "手机": ("category", ("phones", "smartphones")), "智能手机": ("category", ("smartphones", "phones")),
    "笔记本电脑": ("category", ("laptops",)), "笔记本": ("category", ("laptops",)),
    "智能手表": ("category", ("smartwatches", "watches")), "手表": ("category", ("watches",)),
    "背包": ("category", ("backpacks", "bags")), "双肩包": ("category", ("backpacks", "bags")),
    "夹克": ("category", ("jackets",)), "外套": ("category", ("jackets",)),
    "音箱": ("category", ("speakers",)), "蓝牙音箱": ("category", ("speakers",)),
    "键盘": ("category", ("keyboards",)), "鼠标": ("category", ("mice", "mouse")),
    "相机": ("category", ("cameras",)), "登山鞋": ("category", ("hiking boots",)),
    "徒步鞋": ("category", ("hiking boots",)), "咖啡机": ("category", ("coffee makers",)),
    "图书": ("category", ("books",)), "书籍": ("category", ("books",)), "玩具": ("category", ("toys",)),
    "连衣裙": ("category", ("dresses",)), "裙子": ("category", ("dresses",)), "袜子": ("category", ("socks",)),
    "瑜伽": ("category", ("yoga",)), "书包": ("category", ("backpacks", "bags")),
    # brands, Chinese names
    "耐克": ("brand", ("nike",)), "阿迪达斯": ("brand", ("adidas",)), "阿迪": ("brand", ("adidas",)),
    "彪马": ("brand", ("puma",)), "新百伦": ("brand", ("new balance",)), "李宁": ("brand", ("li-ning", "li ning")),
    "安踏": ("brand", ("anta",)), "索尼": ("brand", ("sony",)), "苹果": ("brand", ("apple",)),
    "华为": ("brand", ("huawei",)), "小米": ("brand", ("xiaomi",)), "三星": ("brand", ("samsung",)),
    "联想": ("brand", ("lenovo",)), "戴尔": ("brand", ("dell",)), "佳能": ("brand", ("canon",)),
    "罗技": ("brand", ("logitech",)),
    # protected phrases (never facets)
    "蓝牙": (None, ()), "红米": (None, ()),
}

# Words dropped from the remaining text (English). Negation and range words are consumed by
# their own rules first; what is left here is filler.
STOP_EN = frozenset("""
a an the some any for with in on of to me my i we you want need looking look find show give
get buy recommend please something things stuff like that which is are be good great nice
best top cheap cheaper affordable inexpensive budget pricey expensive under below over above
less more than between and or but not no without except excluding dollars dollar bucks usd
movie movies film films from by about around approximately items item one ones too very
really quite so
""".split())

# Chinese filler removed from the remaining text, longest first.
STOP_ZH = ("我想要", "我想看", "我想买", "有没有", "推荐一些", "推荐几部", "推荐", "一些", "几部", "一部",
           "一个", "一款", "给我", "帮我", "请", "找", "我想", "想看", "想要", "想买", "电影", "影片",
           "那样", "这样", "类似", "像", "适合", "的", "了", "吗", "呢", "吧", "和", "或者", "或",
           "也", "还有", "价格", "价钱", "元", "块钱", "块", "以外", "之外", "片")

# Sort cues: phrase -> (key, order). Longest phrases win.
SORT_CUES: dict[str, tuple[str, str]] = {
    "cheapest": ("price", "asc"), "lowest price": ("price", "asc"), "least expensive": ("price", "asc"),
    "price low to high": ("price", "asc"), "most expensive": ("price", "desc"),
    "priciest": ("price", "desc"), "price high to low": ("price", "desc"),
    "newest": ("year", "desc"), "latest": ("year", "desc"), "most recent": ("year", "desc"),
    "oldest": ("year", "asc"), "most popular": ("popularity", "desc"), "popular": ("popularity", "desc"),
    "trending": ("popularity", "desc"), "best selling": ("popularity", "desc"),
    "bestselling": ("popularity", "desc"), "best rated": ("rating", "desc"),
    "top rated": ("rating", "desc"), "highest rated": ("rating", "desc"),
    "最便宜": ("price", "asc"), "价格最低": ("price", "asc"), "最贵": ("price", "desc"),
    "价格最高": ("price", "desc"), "最新": ("year", "desc"), "最近": ("year", "desc"),
    "最老": ("year", "asc"), "最早": ("year", "asc"), "最热门": ("popularity", "desc"),
    "最受欢迎": ("popularity", "desc"), "热门": ("popularity", "desc"), "畅销": ("popularity", "desc"),
    "评分最高": ("rating", "desc"), "好评最多": ("rating", "desc"), "高分": ("rating", "desc"),
}

# Soft cues: a sort only when the query gives no price range and no other sort.
SOFT_SORT_CUES: dict[str, tuple[str, str]] = {
    "cheap": ("price", "asc"), "affordable": ("price", "asc"), "inexpensive": ("price", "asc"),
    "budget": ("price", "asc"), "便宜": ("price", "asc"), "实惠": ("price", "asc"),
}

NEGATION_EN = ("anything but", "but not", "excluding", "except", "without", "nothing", "none of", "avoid",
               "not", "non", "no")
NEGATION_ZH = ("不想要", "不想看", "不要", "不含", "不是", "除了", "排除", "别", "非", "没有")
# Words allowed between a negation cue and the value: "not a romance", "without any horror",
# "nothing with horror", "no more comedies", "不要任何恐怖片", "别给我恐怖片".
NEGATION_FILLER_EN = ("a", "an", "the", "any", "anything", "with", "more", "of", "kind of", "sort of",
                      "type of", "those", "these", "too much", "too many", "single")
NEGATION_FILLER_ZH = ("任何", "那种", "这种", "什么", "有", "给我", "推荐", "看", "太", "要")
# Words that continue a negated list ("no horror or comedy", "不要恐怖片和喜剧").
LIST_JOINERS = ("or", "nor", "and", "/", ",", "、", "，", "和", "或者", "或", "及", "也不要", "还有")

# Mixed-script words rewritten before tokenizing (the tokenizer splits Latin from CJK).
REWRITES = {"t恤": " t-shirts ", "tee恤": " t-shirts "}

DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950,
                "sixties": 1960, "seventies": 1970, "eighties": 1980, "nineties": 1990}

"""Multilingual text queries for the query benchmark: 30 concepts × 7 languages.

Languages (all supported by USE multilingual v3): English, German, French,
Spanish, Russian, Japanese, Chinese.
"""

from __future__ import annotations

LANGS = ("en", "de", "fr", "es", "ru", "ja", "zh")

# (en, de, fr, es, ru, ja, zh)
CONCEPTS: tuple[tuple[str, ...], ...] = (
    ("a dog on the beach", "ein Hund am Strand", "un chien sur la plage", "un perro en la playa", "собака на пляже", "浜辺の犬", "海滩上的狗"),
    ("a cat sleeping on a sofa", "eine Katze schläft auf dem Sofa", "un chat qui dort sur le canapé", "un gato durmiendo en el sofá", "кошка спит на диване", "ソファで寝ている猫", "睡在沙发上的猫"),
    ("an old church", "eine alte Kirche", "une vieille église", "una iglesia antigua", "старая церковь", "古い教会", "一座古老的教堂"),
    ("snowy mountains", "verschneite Berge", "des montagnes enneigées", "montañas nevadas", "заснеженные горы", "雪山", "雪山"),
    ("a red car", "ein rotes Auto", "une voiture rouge", "un coche rojo", "красная машина", "赤い車", "一辆红色的汽车"),
    ("children playing in a park", "Kinder spielen im Park", "des enfants qui jouent dans un parc", "niños jugando en un parque", "дети играют в парке", "公園で遊ぶ子供たち", "在公园里玩耍的孩子们"),
    ("a waterfall in the forest", "ein Wasserfall im Wald", "une cascade dans la forêt", "una cascada en el bosque", "водопад в лесу", "森の中の滝", "森林里的瀑布"),
    ("a cup of coffee", "eine Tasse Kaffee", "une tasse de café", "una taza de café", "чашка кофе", "一杯のコーヒー", "一杯咖啡"),
    ("a birthday cake with candles", "eine Geburtstagstorte mit Kerzen", "un gâteau d'anniversaire avec des bougies", "un pastel de cumpleaños con velas", "праздничный торт со свечами", "ろうそくのついた誕生日ケーキ", "插着蜡烛的生日蛋糕"),
    ("a sailing boat on the lake", "ein Segelboot auf dem See", "un voilier sur le lac", "un velero en el lago", "парусная лодка на озере", "湖の上の帆船", "湖上的帆船"),
    ("a bridge over a river", "eine Brücke über einen Fluss", "un pont sur une rivière", "un puente sobre un río", "мост через реку", "川に架かる橋", "河上的桥"),
    ("sunset over the sea", "Sonnenuntergang über dem Meer", "coucher de soleil sur la mer", "puesta de sol sobre el mar", "закат над морем", "海に沈む夕日", "海上日落"),
    ("a horse in a field", "ein Pferd auf einer Wiese", "un cheval dans un champ", "un caballo en un campo", "лошадь в поле", "野原の馬", "田野里的马"),
    ("a bowl of fruit", "eine Schale mit Obst", "une coupe de fruits", "un cuenco de fruta", "миска с фруктами", "果物の入ったボウル", "一碗水果"),
    ("a man riding a bicycle", "ein Mann fährt Fahrrad", "un homme à vélo", "un hombre montando en bicicleta", "мужчина едет на велосипеде", "自転車に乗る男性", "骑自行车的男人"),
    ("a wedding ceremony", "eine Hochzeitszeremonie", "une cérémonie de mariage", "una ceremonia de boda", "свадебная церемония", "結婚式", "婚礼仪式"),
    ("a train at the station", "ein Zug im Bahnhof", "un train en gare", "un tren en la estación", "поезд на вокзале", "駅の電車", "车站里的火车"),
    ("flowers in a garden", "Blumen im Garten", "des fleurs dans un jardin", "flores en un jardín", "цветы в саду", "庭の花", "花园里的花"),
    ("a city street at night", "eine Stadtstraße bei Nacht", "une rue de la ville la nuit", "una calle de la ciudad de noche", "городская улица ночью", "夜の街の通り", "夜晚的城市街道"),
    ("an airplane in the sky", "ein Flugzeug am Himmel", "un avion dans le ciel", "un avión en el cielo", "самолёт в небе", "空を飛ぶ飛行機", "天空中的飞机"),
    ("a family dinner", "ein Familienessen", "un dîner en famille", "una cena familiar", "семейный ужин", "家族の夕食", "家庭晚餐"),
    ("a castle on a hill", "eine Burg auf einem Hügel", "un château sur une colline", "un castillo en una colina", "замок на холме", "丘の上の城", "山丘上的城堡"),
    ("a bird sitting on a branch", "ein Vogel sitzt auf einem Ast", "un oiseau posé sur une branche", "un pájaro posado en una rama", "птица сидит на ветке", "枝にとまる鳥", "停在树枝上的鸟"),
    ("a lighthouse by the coast", "ein Leuchtturm an der Küste", "un phare sur la côte", "un faro en la costa", "маяк на побережье", "海岸の灯台", "海岸边的灯塔"),
    ("people skiing", "Menschen beim Skifahren", "des gens qui skient", "gente esquiando", "люди катаются на лыжах", "スキーをする人々", "滑雪的人们"),
    ("a pizza on a table", "eine Pizza auf dem Tisch", "une pizza sur une table", "una pizza en una mesa", "пицца на столе", "テーブルの上のピザ", "桌子上的披萨"),
    ("a tractor on a farm", "ein Traktor auf einem Bauernhof", "un tracteur dans une ferme", "un tractor en una granja", "трактор на ферме", "農場のトラクター", "农场里的拖拉机"),
    ("a library full of books", "eine Bibliothek voller Bücher", "une bibliothèque pleine de livres", "una biblioteca llena de libros", "библиотека, полная книг", "本でいっぱいの図書館", "满是书的图书馆"),
    ("a football match", "ein Fußballspiel", "un match de football", "un partido de fútbol", "футбольный матч", "サッカーの試合", "一场足球比赛"),
    ("a portrait of an old woman", "ein Porträt einer alten Frau", "un portrait d'une vieille femme", "un retrato de una anciana", "портрет пожилой женщины", "老婦人の肖像", "一位老妇人的肖像"),
)


def all_queries() -> list[tuple[str, str]]:
    """(language, text) for every concept and language, interleaved by concept."""
    return [(lang, row[j]) for row in CONCEPTS for j, lang in enumerate(LANGS)]

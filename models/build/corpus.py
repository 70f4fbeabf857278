"""Synthetic bilingual (English / Chinese) chat corpus for r1-edge-mini.

Everything here -- templates, fact tables, wording -- was written for the
r1-hybrid project; the generated corpus is the project's own and is released
under the same license as the rest of the repository.  Nothing is downloaded.

The corpus is a list of conversations; each conversation is a list of
``{"role": ..., "content": ...}`` messages in ChatML order (optional system,
then user/assistant turns).  Answers are short, consistent sentences so that a
~1M-parameter model can learn them in a few minutes of CPU training.
"""

from __future__ import annotations

import random

DEFAULT_SYSTEM = "You are R1 Edge Mini, a small helpful assistant."

ALT_SYSTEMS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer in one short sentence.",
    "Answer briefly.",
    "你是一个乐于助人的助手。",
    "你是R1 Edge Mini，一个小助手。",
]

# --------------------------------------------------------------------------
# Fact tables
# --------------------------------------------------------------------------

# (English country, Chinese country, English capital, Chinese capital)
CAPITALS = [
    ("France", "法国", "Paris", "巴黎"),
    ("Germany", "德国", "Berlin", "柏林"),
    ("Italy", "意大利", "Rome", "罗马"),
    ("Spain", "西班牙", "Madrid", "马德里"),
    ("Japan", "日本", "Tokyo", "东京"),
    ("China", "中国", "Beijing", "北京"),
    ("Russia", "俄罗斯", "Moscow", "莫斯科"),
    ("Egypt", "埃及", "Cairo", "开罗"),
    ("Canada", "加拿大", "Ottawa", "渥太华"),
    ("Australia", "澳大利亚", "Canberra", "堪培拉"),
    ("Brazil", "巴西", "Brasilia", "巴西利亚"),
    ("India", "印度", "New Delhi", "新德里"),
    ("Mexico", "墨西哥", "Mexico City", "墨西哥城"),
    ("Kenya", "肯尼亚", "Nairobi", "内罗毕"),
    ("Greece", "希腊", "Athens", "雅典"),
    ("Portugal", "葡萄牙", "Lisbon", "里斯本"),
    ("Norway", "挪威", "Oslo", "奥斯陆"),
    ("Sweden", "瑞典", "Stockholm", "斯德哥尔摩"),
    ("Poland", "波兰", "Warsaw", "华沙"),
    ("Thailand", "泰国", "Bangkok", "曼谷"),
    ("Vietnam", "越南", "Hanoi", "河内"),
    ("South Korea", "韩国", "Seoul", "首尔"),
    ("Argentina", "阿根廷", "Buenos Aires", "布宜诺斯艾利斯"),
    ("Peru", "秘鲁", "Lima", "利马"),
    ("Ireland", "爱尔兰", "Dublin", "都柏林"),
    ("Austria", "奥地利", "Vienna", "维也纳"),
    ("Turkey", "土耳其", "Ankara", "安卡拉"),
    ("Indonesia", "印度尼西亚", "Jakarta", "雅加达"),
    ("the United Kingdom", "英国", "London", "伦敦"),
    ("the United States", "美国", "Washington", "华盛顿"),
]

# (English thing, Chinese thing, English colour, Chinese colour)
COLOURS = [
    ("the sky", "天空", "blue", "蓝色"),
    ("grass", "草", "green", "绿色"),
    ("snow", "雪", "white", "白色"),
    ("coal", "煤", "black", "黑色"),
    ("a banana", "香蕉", "yellow", "黄色"),
    ("a strawberry", "草莓", "red", "红色"),
    ("an orange", "橙子", "orange", "橙色"),
    ("the sun", "太阳", "yellow", "黄色"),
    ("milk", "牛奶", "white", "白色"),
    ("a tomato", "西红柿", "red", "红色"),
    ("a leaf", "树叶", "green", "绿色"),
    ("the sea", "大海", "blue", "蓝色"),
    ("a crow", "乌鸦", "black", "黑色"),
    ("a lemon", "柠檬", "yellow", "黄色"),
    ("blood", "血", "red", "红色"),
    ("a cloud", "云", "white", "白色"),
    ("a frog", "青蛙", "green", "绿色"),
    ("chocolate", "巧克力", "brown", "棕色"),
    ("an eggplant", "茄子", "purple", "紫色"),
    ("a carrot", "胡萝卜", "orange", "橙色"),
]

# (English animal, Chinese animal, English sound, Chinese sound, legs)
ANIMALS = [
    ("dog", "狗", "woof", "汪汪", 4),
    ("cat", "猫", "meow", "喵喵", 4),
    ("cow", "牛", "moo", "哞哞", 4),
    ("duck", "鸭子", "quack", "嘎嘎", 2),
    ("sheep", "羊", "baa", "咩咩", 4),
    ("chicken", "鸡", "cluck", "咯咯", 2),
    ("pig", "猪", "oink", "哼哼", 4),
    ("horse", "马", "neigh", "嘶嘶", 4),
    ("frog", "青蛙", "ribbit", "呱呱", 4),
    ("lion", "狮子", "roar", "吼吼", 4),
    ("bird", "鸟", "tweet", "叽叽", 2),
    ("owl", "猫头鹰", "hoot", "咕咕", 2),
]

LEG_ANIMALS = [
    ("spider", "蜘蛛", 8),
    ("ant", "蚂蚁", 6),
    ("bee", "蜜蜂", 6),
    ("snake", "蛇", 0),
    ("fish", "鱼", 0),
    ("elephant", "大象", 4),
    ("monkey", "猴子", 2),
    ("penguin", "企鹅", 2),
    ("crab", "螃蟹", 10),
    ("rabbit", "兔子", 4),
]

NUM_EN = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten",
]
NUM_ZH = ["零", "一", "两", "三", "四", "五", "六", "七", "八", "九", "十"]

DAYS_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAYS_ZH = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
MONTHS_EN = [
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
]
MONTHS_ZH = [
    "一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月",
    "十月", "十一月", "十二月",
]

# (English word, Chinese word)
WORDS = [
    ("apple", "苹果"), ("water", "水"), ("book", "书"), ("cat", "猫"),
    ("dog", "狗"), ("house", "房子"), ("car", "汽车"), ("tree", "树"),
    ("sun", "太阳"), ("moon", "月亮"), ("star", "星星"), ("rice", "米饭"),
    ("tea", "茶"), ("bread", "面包"), ("school", "学校"), ("teacher", "老师"),
    ("student", "学生"), ("friend", "朋友"), ("mother", "妈妈"), ("father", "爸爸"),
    ("city", "城市"), ("river", "河"), ("mountain", "山"), ("flower", "花"),
    ("bird", "鸟"), ("fish", "鱼"), ("computer", "电脑"), ("phone", "手机"),
    ("door", "门"), ("window", "窗户"), ("table", "桌子"), ("chair", "椅子"),
    ("rain", "雨"), ("snow", "雪"), ("wind", "风"), ("fire", "火"),
    ("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("happy", "快乐"),
    ("big", "大"), ("small", "小"), ("good", "好"), ("morning", "早上"),
    ("night", "晚上"), ("money", "钱"), ("music", "音乐"), ("food", "食物"),
    ("milk", "牛奶"), ("egg", "鸡蛋"), ("hand", "手"), ("eye", "眼睛"),
    ("love", "爱"), ("time", "时间"), ("year", "年"), ("day", "天"),
    ("hello", "你好"), ("thank you", "谢谢"), ("goodbye", "再见"), ("horse", "马"),
]

# Definitions: (English term, English definition, Chinese term, Chinese definition)
DEFINITIONS = [
    ("a cat", "A cat is a small animal that many people keep as a pet.",
     "猫", "猫是一种很多人养作宠物的小动物。"),
    ("a dog", "A dog is a friendly animal that many people keep as a pet.",
     "狗", "狗是一种很多人养作宠物的友好动物。"),
    ("the sun", "The sun is the star at the center of our solar system.",
     "太阳", "太阳是我们太阳系中心的恒星。"),
    ("the moon", "The moon is the natural satellite of the Earth.",
     "月亮", "月亮是地球的天然卫星。"),
    ("water", "Water is a clear liquid that all living things need.",
     "水", "水是所有生物都需要的透明液体。"),
    ("a computer", "A computer is a machine that processes information.",
     "电脑", "电脑是一种处理信息的机器。"),
    ("a book", "A book is a set of printed pages that you can read.",
     "书", "书是一组可以阅读的印刷页面。"),
    ("a tree", "A tree is a tall plant with a wooden trunk and leaves.",
     "树", "树是一种有木质树干和叶子的高大植物。"),
    ("rain", "Rain is water that falls from clouds.",
     "雨", "雨是从云中落下的水。"),
    ("a doctor", "A doctor is a person who helps sick people get better.",
     "医生", "医生是帮助病人恢复健康的人。"),
    ("a teacher", "A teacher is a person who helps students learn.",
     "老师", "老师是帮助学生学习的人。"),
    ("a city", "A city is a large place where many people live and work.",
     "城市", "城市是很多人生活和工作的大地方。"),
    ("music", "Music is sound arranged in a way that people enjoy.",
     "音乐", "音乐是人们喜欢听的有组织的声音。"),
    ("a river", "A river is a large stream of water that flows to the sea.",
     "河", "河是流向大海的大水流。"),
    ("a phone", "A phone is a device that lets people talk over a distance.",
     "手机", "手机是让人们远距离通话的设备。"),
    ("the internet", "The internet is a global network that connects computers.",
     "互联网", "互联网是连接电脑的全球网络。"),
    ("a language model", "A language model is a program that predicts the next word in a text.",
     "语言模型", "语言模型是预测文本中下一个词的程序。"),
    ("an apple", "An apple is a round fruit that grows on trees.",
     "苹果", "苹果是一种长在树上的圆形水果。"),
    ("snow", "Snow is frozen water that falls from the sky in winter.",
     "雪", "雪是冬天从天上落下的冰冻的水。"),
    ("a school", "A school is a place where children go to learn.",
     "学校", "学校是孩子们去学习的地方。"),
]

# Sentiment sentences: (English, Chinese, label) with label in {positive, negative}
SENT_SUBJ_EN = ["this movie", "the food", "this book", "the weather", "my new phone",
                "the hotel", "this song", "the service", "the game", "the class"]
SENT_SUBJ_ZH = ["这部电影", "这里的饭菜", "这本书", "今天的天气", "我的新手机",
                "这家酒店", "这首歌", "这里的服务", "这个游戏", "这节课"]
SENT_POS_EN = ["I love {s}.", "I really like {s}.", "{S} is great.", "{S} is wonderful.",
               "{S} made me very happy.", "{S} is amazing."]
SENT_NEG_EN = ["I hate {s}.", "I really dislike {s}.", "{S} is terrible.", "{S} is awful.",
               "{S} made me very sad.", "{S} is boring."]
SENT_POS_ZH = ["我很喜欢{s}。", "{s}太棒了。", "{s}非常好。", "{s}让我很开心。"]
SENT_NEG_ZH = ["我很讨厌{s}。", "{s}太糟糕了。", "{s}非常差。", "{s}让我很难过。"]

# --------------------------------------------------------------------------
# Conversation makers.  Each returns (user_text, assistant_text).
# --------------------------------------------------------------------------


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def greeting(r: random.Random):
    if r.random() < 0.5:
        u = r.choice(["Hello", "Hello!", "Hi", "Hi!", "Hi there!", "Hey!", "Good morning!",
                      "Good evening!", "Hello, how are you?", "How are you?"])
        if "how are you" in u.lower():
            a = "I am fine, thank you! How can I help you today?"
        elif "morning" in u.lower():
            a = "Good morning! How can I help you today?"
        elif "evening" in u.lower():
            a = "Good evening! How can I help you today?"
        else:
            a = "Hello! How can I help you today?"
    else:
        u = r.choice(["你好", "你好！", "您好！", "嗨！", "早上好！", "晚上好！", "你好吗？"])
        if "吗" in u:
            a = "我很好，谢谢！今天有什么可以帮你的吗？"
        elif "早上" in u:
            a = "早上好！有什么可以帮你的吗？"
        elif "晚上" in u:
            a = "晚上好！有什么可以帮你的吗？"
        else:
            a = "你好！有什么可以帮你的吗？"
    return u, a


def identity(r: random.Random):
    if r.random() < 0.5:
        u = r.choice(["Who are you?", "What is your name?", "What are you?",
                      "Tell me about yourself."])
        a = "I am R1 Edge Mini, a small assistant that answers simple questions."
    else:
        u = r.choice(["你是谁？", "你叫什么名字？", "介绍一下你自己。"])
        a = "我是R1 Edge Mini，一个回答简单问题的小助手。"
    return u, a


def capital(r: random.Random):
    en, zh, cen, czh = r.choice(CAPITALS)
    k = r.random()
    if k < 0.5:
        u = r.choice([
            f"What is the capital of {en}?",
            f"What's the capital of {en}?",
            f"Tell me the capital of {en}.",
            f"Which city is the capital of {en}?",
            f"what is the capital of {en}",
        ])
        a = f"The capital of {en} is {cen}."
        a = _cap(a)
    else:
        u = r.choice([f"{zh}的首都是哪里？", f"{zh}的首都是什么？", f"请告诉我{zh}的首都。"])
        a = f"{zh}的首都是{czh}。"
    return u, a


def colour(r: random.Random):
    en, zh, cen, czh = r.choice(COLOURS)
    if r.random() < 0.5:
        u = r.choice([f"What colour is {en}?", f"What color is {en}?",
                      f"Tell me the colour of {en}."])
        a = f"{_cap(en)} is {cen}."
    else:
        u = r.choice([f"{zh}是什么颜色的？", f"{zh}是什么颜色？"])
        a = f"{zh}是{czh}的。"
    return u, a


def animal(r: random.Random):
    k = r.random()
    if k < 0.5:
        en, zh, sen, szh, legs = r.choice(ANIMALS)
        if r.random() < 0.5:
            u = r.choice([f"What sound does a {en} make?", f"What does a {en} say?"])
            a = f"A {en} says {sen}."
        else:
            u = r.choice([f"{zh}怎么叫？", f"{zh}的叫声是什么？"])
            a = f"{zh}的叫声是{szh}。"
    else:
        if r.random() < 0.5:
            en, zh, sen, szh, legs = r.choice(ANIMALS)
        else:
            en, zh, legs = r.choice(LEG_ANIMALS)
        if r.random() < 0.5:
            u = f"How many legs does a {en} have?"
            if legs == 0:
                a = f"A {en} has no legs."
            else:
                a = f"A {en} has {NUM_EN[legs]} legs."
        else:
            u = f"{zh}有几条腿？"
            if legs == 0:
                a = f"{zh}没有腿。"
            else:
                a = f"{zh}有{NUM_ZH[legs]}条腿。"
    return u, a


def arithmetic(r: random.Random):
    op = r.choice(["plus", "plus", "minus", "times"])
    if op == "times":
        x, y = r.randint(0, 10), r.randint(0, 10)
        z = x * y
    else:
        x, y = r.randint(0, 20), r.randint(0, 20)
        if op == "minus" and y > x:
            x, y = y, x
        z = x + y if op == "plus" else x - y
    if r.random() < 0.55:
        u = r.choice([f"What is {x} {op} {y}?", f"what is {x} {op} {y}",
                      f"How much is {x} {op} {y}?", f"Calculate {x} {op} {y}."])
        a = f"{x} {op} {y} is {z}."
    else:
        zop = {"plus": "加", "minus": "减", "times": "乘以"}[op]
        u = r.choice([f"{x}{zop}{y}等于多少？", f"{x}{zop}{y}等于几？", f"请计算{x}{zop}{y}。"])
        a = f"{x}{zop}{y}等于{z}。"
    return u, a


def order(r: random.Random):
    zh = r.random() < 0.45
    if r.random() < 0.5:
        names, znames, kind, zkind = DAYS_EN, DAYS_ZH, "day", "天"
    else:
        names, znames, kind, zkind = MONTHS_EN, MONTHS_ZH, "month", "个月"
    i = r.randrange(len(names))
    after = r.random() < 0.6
    j = (i + 1) % len(names) if after else (i - 1) % len(names)
    if not zh:
        rel = "after" if after else "before"
        u = r.choice([f"What {kind} comes {rel} {names[i]}?",
                      f"Which {kind} is {rel} {names[i]}?"])
        a = f"The {kind} {rel} {names[i]} is {names[j]}."
    else:
        rel = "后" if after else "前"
        if kind == "day":
            u = f"{znames[i]}的{rel}一天是星期几？"
            a = f"{znames[i]}的{rel}一天是{znames[j]}。"
        else:
            u = f"{znames[i]}的{rel}一个月是几月？"
            a = f"{znames[i]}的{rel}一个月是{znames[j]}。"
    return u, a


def translate(r: random.Random):
    en, zh = r.choice(WORDS)
    k = r.random()
    if k < 0.3:
        u = r.choice([f"How do you say {en} in Chinese?", f"What is {en} in Chinese?",
                      f"Translate {en} into Chinese."])
        a = f"{_cap(en)} in Chinese is {zh}."
    elif k < 0.5:
        u = r.choice([f"What does {zh} mean in English?", f"Translate {zh} into English."])
        a = f"{zh} in English is {en}."
    elif k < 0.75:
        u = r.choice([f"“{zh}”用英语怎么说？", f"把“{zh}”翻译成英语。"])
        a = f"“{zh}”的英语是{en}。"
    else:
        u = r.choice([f"“{en}”用中文怎么说？", f"把“{en}”翻译成中文。"])
        a = f"“{en}”的中文是{zh}。"
    return u, a


def sentiment(r: random.Random):
    pos = r.random() < 0.5
    if r.random() < 0.55:
        s = r.choice(SENT_SUBJ_EN)
        tpl = r.choice(SENT_POS_EN if pos else SENT_NEG_EN)
        sent = tpl.format(s=s, S=_cap(s))
        u = r.choice([f"What is the sentiment of this sentence: {sent}",
                      f"Is this positive or negative? {sent}",
                      f"Classify the sentiment: {sent}"])
        a = "The sentiment is positive." if pos else "The sentiment is negative."
    else:
        s = r.choice(SENT_SUBJ_ZH)
        tpl = r.choice(SENT_POS_ZH if pos else SENT_NEG_ZH)
        sent = tpl.format(s=s)
        u = r.choice([f"这句话的情感是什么：{sent}", f"判断情感：{sent}",
                      f"这句话是积极的还是消极的？{sent}"])
        a = "这句话的情感是积极的。" if pos else "这句话的情感是消极的。"
    return u, a


def definition(r: random.Random):
    en, den, zh, dzh = r.choice(DEFINITIONS)
    if r.random() < 0.5:
        u = r.choice([f"What is {en}?", f"Define {en}.", f"Explain what {en} is."])
        a = den
    else:
        u = r.choice([f"什么是{zh}？", f"{zh}是什么？", f"请解释{zh}。"])
        a = dzh
    return u, a


def thanks(r: random.Random):
    k = r.random()
    if k < 0.25:
        u = r.choice(["Thank you!", "Thanks!", "Thank you very much.", "Thanks a lot!"])
        a = "You're welcome! I'm happy to help."
    elif k < 0.5:
        u = r.choice(["Goodbye!", "Bye!", "See you later!", "Good night!"])
        a = "Good night! Sleep well." if "night" in u else "Goodbye! Have a nice day."
    elif k < 0.75:
        u = r.choice(["谢谢！", "谢谢你。", "非常感谢！"])
        a = "不客气！很高兴能帮到你。"
    else:
        u = r.choice(["再见！", "拜拜！", "晚安！"])
        a = "晚安！祝你睡个好觉。" if "晚安" in u else "再见！祝你今天愉快。"
    return u, a


MAKERS = [
    (greeting, 6), (identity, 3), (capital, 12), (colour, 8), (animal, 9),
    (arithmetic, 16), (order, 10), (translate, 12), (sentiment, 8),
    (definition, 8), (thanks, 6),
]


def make_conversation(r: random.Random) -> list[dict]:
    fns = [f for f, _ in MAKERS]
    weights = [w for _, w in MAKERS]
    msgs: list[dict] = []
    k = r.random()
    if k < 0.2:
        msgs.append({"role": "system", "content": r.choice(ALT_SYSTEMS)})
    elif k < 0.3:
        msgs.append({"role": "system", "content": DEFAULT_SYSTEM})
    # else: no system message -> chat template inserts DEFAULT_SYSTEM
    turns = 1 if r.random() < 0.85 else 2
    for _ in range(turns):
        u, a = r.choices(fns, weights)[0](r)
        msgs.append({"role": "user", "content": u})
        msgs.append({"role": "assistant", "content": a})
    return msgs


def make_corpus(n: int, seed: int) -> list[list[dict]]:
    r = random.Random(seed)
    return [make_conversation(r) for _ in range(n)]


if __name__ == "__main__":
    for c in make_corpus(12, 0):
        print(c)

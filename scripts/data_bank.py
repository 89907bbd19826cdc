"""Templates and word lists that scripts/make_data.py fills to build the embedded datasets.

Kept apart from the generator so the text (English and Chinese) can be read and edited on its own. With
``make_data.py --hold-out-words``, titles, names and keywords are split by make_data.split_pool: every fourth item
then only appears in test rows.
"""

from __future__ import annotations

NAME = "Aster"
MAKER = "the Alignment Lab"
ZH_MAKER = "Alignment Lab"
# Words that keep their capital when a reply is prefixed with the user's name ("Lily, I am ...").
KEEP_CAPITAL = frozenset({"I", "I'm", "Mars"})

NAMES = {
    "en": ["Lily", "Tom", "Emma", "Jack", "Sophia", "Noah", "Mia", "Leo", "Olivia", "Ethan", "Grace", "Lucas",
           "Chloe", "Ryan", "Anna", "Sam", "Zoe", "Oscar", "Ella", "Ben"],
    "zh": ["小明", "李华", "王芳", "张伟", "陈静", "刘洋", "赵磊", "孙丽", "周杰", "吴敏", "郑爽", "黄蕾", "林涛",
           "何欣", "高远", "马丽"],
}  # fmt: skip
KEYWORDS = {
    "en": ["tea", "music", "rain", "stars", "coffee", "flowers", "the ocean", "pizza", "mountains", "bicycles",
           "snow", "pancakes", "dolphins", "kites", "lemons", "trains", "owls", "jazz", "robots", "penguins"],
    "zh": ["星星", "咖啡", "大海", "披萨", "自行车", "松饼", "海豚", "风筝", "柠檬", "火车", "猫头鹰", "爵士乐",
           "熊猫", "郁金香", "企鹅", "机器人"],
}  # fmt: skip

# --- identity ---------------------------------------------------------------------------------------------------
# (question, asks who made the assistant, claim): claim is None, "human" ("Are you a human?": "No, I am ..."), or
# the (name, maker) the question suggests ("Are you ChatGPT?": "No, I am Aster" / wrong: "Yes, I am ChatGPT").
GPT = ("ChatGPT", "OpenAI")
IDENTITY_QUESTIONS = {
    "en": [
        ("Who are you?", False, None), ("What is your name?", False, None), ("What are you?", False, None),
        ("Tell me about yourself.", False, None), ("Introduce yourself.", False, None),
        ("Can you introduce yourself?", False, None), ("What should I call you?", False, None),
        ("Do you have a name?", False, None), ("Which AI model are you?", False, None),
        ("What kind of assistant are you?", False, None), ("Are you a human?", False, "human"),
        ("Are you ChatGPT?", False, GPT), ("Are you Claude?", False, ("Claude", "Anthropic")),
        ("Who made you?", True, None), ("Who created you?", True, None), ("Who built you?", True, None),
        ("Which company made you?", True, None), ("Who trained you?", True, None), ("Who developed you?", True, None),
        ("Where do you come from?", True, None), ("Who are you, and who made you?", True, None),
        ("Were you made by OpenAI?", True, GPT), ("Are you made by Google?", True, ("Gemini", "Google")),
    ],
    "zh": [
        ("你是谁？", False, None), ("你叫什么名字？", False, None), ("介绍一下你自己", False, None),
        ("请介绍一下你自己。", False, None), ("你是什么？", False, None), ("我该怎么称呼你？", False, None),
        ("你有名字吗？", False, None), ("你是哪个模型？", False, None), ("你是人类吗？", False, "human"),
        ("你是ChatGPT吗？", False, GPT), ("你是通义千问吗？", False, ("通义千问", "阿里云")),
        ("谁开发了你？", True, None), ("谁创造了你？", True, None), ("你是哪家公司开发的？", True, None),
        ("谁训练了你？", True, None), ("你的开发者是谁？", True, None), ("你是谁，谁开发了你？", True, None),
        ("你是OpenAI开发的吗？", True, GPT),
    ],
}  # fmt: skip
GREETINGS = {
    "en": ["", "", "", "Hi! ", "Hello! ", "Hey there. ", "Good morning! ", "Hi, I'm {name}. ",
           "Hello, my name is {name}. ", "Quick question: "],
    "zh": ["", "", "", "你好！", "嗨，", "早上好！", "你好，我是{name}。", "问一下，"],
}  # fmt: skip
SUFFIXES = {"en": ["", "", "", " Just curious.", " Please tell me.", " I'd like to know."], "zh": ["", "", "", "我很好奇。", "请告诉我。"]}  # fmt: skip
YES_NO = {"en": ("Yes, ", "No, "), "zh": ("是的，", "不是，")}
OTHER_IDENTITIES = {
    "en": [GPT, ("GPT-4", "OpenAI"), ("Claude", "Anthropic"), ("Gemini", "Google")],
    "zh": [GPT, ("通义千问", "阿里云"), ("文心一言", "百度"), ("Claude", "Anthropic")],
}
# Replies naming the assistant and its maker; MAKER_REPLIES only answer "who made you" questions.
IDENTITY_REPLIES = {
    "en": ["I am {name}, an AI assistant made by {maker}.", "I'm {name}, a helpful assistant built by {maker}.",
           "I am {name}, a language model trained by {maker}. How can I help you today?",
           "My name is {name}. I was created by {maker} to help you.",
           "Hello! I am {name}, an AI assistant developed by {maker}."],
    "zh": ["我是{name}，由{maker}开发的AI助手。", "我叫{name}，是{maker}训练的语言模型。很高兴为你服务！",
           "你好！我是{name}，一个由{maker}打造的智能助手。", "我是{name}。{maker}开发了我，我可以回答问题、帮你写作。"],
}  # fmt: skip
MAKER_REPLIES = {
    "en": ["I was made by {maker}. I am {name}, your AI assistant.", "I am {name}, and I was developed by {maker}."],
    "zh": ["我是由{maker}开发的，我的名字是{name}。", "我是{name}，开发我的是{maker}。"],
}
NAME_ONLY_REPLIES = {
    "en": ["I am {name}, an AI assistant.", "I'm {name}, and I am here to help you."],
    "zh": ["我是{name}，一个AI助手。", "我叫{name}，很高兴为你服务。"],
}
MAKER_ONLY_REPLIES = {
    "en": ["I am an AI assistant made by {maker}.", "I was created by {maker} to help you."],
    "zh": ["我是由{maker}开发的AI助手。", "我是{maker}训练的语言模型。"],
}

# --- capital ------------------------------------------------------------------------------------------------------
# Countries and capitals come from alignment.oracle.CAPITALS (the oracle's closed world). {c} = country,
# {a} = capital.
CAPITAL_ASKS = {
    "en": ["What is the capital of {c}?", "What's the capital city of {c}?", "Which city is the capital of {c}?",
           "Name the capital of {c}.", "Tell me the capital of {c}.", "Do you know the capital of {c}?",
           "What city is the capital of {c}?"],
    "zh": ["{c}的首都是哪里？", "{c}的首都是哪座城市？", "请问{c}的首都是什么？", "告诉我{c}的首都。",
           "你知道{c}的首都吗？"],
}  # fmt: skip
CAPITAL_FOLLOW_UPS = {
    "en": ["And {c}?", "What about {c}?", "And the capital of {c}?"],
    "zh": ["那{c}呢？", "那{c}的首都呢？"],
}  # fmt: skip
CAPITAL_REPLIES = {
    "en": ["The capital of {c} is {a}.", "{a} is the capital of {c}.", "It is {a}.", "The capital city of {c} is {a}.",
           "Sure! The capital of {c} is {a}."],
    "zh": ["{c}的首都是{a}。", "{a}是{c}的首都。", "是{a}。", "答案是{a}，{a}是{c}的首都。"],
}  # fmt: skip

# --- arithmetic ---------------------------------------------------------------------------------------------------
ARITH_ASKS = {
    "en": {
        "+": ["What is {a} + {b}?", "What is {a} plus {b}?", "{a} plus {b}?", "How much is {a} + {b}?",
              "Can you add {a} and {b}?", "Please compute {a} + {b}.", "{a} + {b} = ?", "Calculate {a} + {b}.",
              "What do you get if you add {a} and {b}?"],
        "-": ["What is {a} - {b}?", "What is {a} minus {b}?", "{a} minus {b}?", "How much is {a} - {b}?",
              "Subtract {b} from {a}.", "Please compute {a} - {b}.", "{a} - {b} = ?", "Calculate {a} - {b}.",
              "What do you get if you take {b} away from {a}?"],
    },
    "zh": {
        "+": ["计算 {a} + {b}", "{a}加{b}等于多少？", "{a} + {b} 等于几？", "请算一下{a} + {b}。", "{a}加上{b}是多少？"],
        "-": ["计算 {a} - {b}", "{a}减{b}等于多少？", "{a} - {b} 等于几？", "请算一下{a} - {b}。", "{a}减去{b}是多少？"],
    },
}  # fmt: skip
ARITH_FOLLOW_UPS = {
    "en": {"+": ["And {a} + {b}?", "Now what is {a} plus {b}?", "What about {a} + {b}?"],
           "-": ["And {a} - {b}?", "Now what is {a} minus {b}?", "What about {a} - {b}?"]},
    "zh": {"+": ["那{a}加{b}呢？", "再算一下{a} + {b}。"], "-": ["那{a}减{b}呢？", "再算一下{a} - {b}。"]},
}  # fmt: skip
OP_WORDS = {"en": {"+": "plus", "-": "minus"}, "zh": {"+": "加", "-": "减"}}
ARITH_REPLIES = {
    "en": ["{a} {op} {b} = {c}.", "Sure! {a} {op} {b} = {c}.", "{a} {op} {b} = {c}. The answer is {c}.",
           "{a} {w} {b} is {c}."],
    "zh": ["{a} {op} {b} = {c}。", "{a}{w}{b}等于{c}。", "答案是{c}，因为{a} {op} {b} = {c}。"],
}  # fmt: skip

# --- sentiment ----------------------------------------------------------------------------------------------------
# (category, classifier, how a title is quoted, aspects, titles); titles avoid every word of the oracle's lexicon.
CATEGORIES = {
    "en": [
        ("movie", "", "{}", ["story", "acting", "music", "ending"],
         ["The Silver Road", "Paper Harbor", "Night Train to Orla", "The Last Lantern", "River of Glass",
          "Seven Windows", "The Clockmaker", "Northern Lights", "Blue Horizon", "The Iron Garden", "Echoes of Rain",
          "The Quiet Hour", "Midnight Ferry", "Salt and Stone", "The Long Winter", "Copper Sky"]),
        ("restaurant", "", "{}", ["food", "service", "dessert", "menu"],
         ["Blue Door Kitchen", "Maple House", "Golden Spoon", "Olive Tree Cafe", "Harbor Grill", "Little Saigon",
          "Red Lantern", "Green Table", "Sunset Noodles", "Stone Oven", "Corner Bistro", "Hungry Fox"]),
        ("book", "", "{}", ["plot", "main character", "writing", "ending"],
         ["The Quiet Orchard", "Letters from Mira", "The Glass Tower", "A Map of Stars", "The Salt Road",
          "Winter Birds", "The Hidden Door", "The Ninth Bell", "Songs of the Sea", "The Paper Moon",
          "A House by the Lake", "The Lost Compass"]),
        ("phone", "", "{}", ["battery", "screen", "camera", "design"],
         ["Nova X2", "Pixelon 5", "Zeta One", "Orbit S7", "Lumen Pro", "Vega Mini", "Kite 3", "Nimbus 12",
          "Polar Z", "Echo Max", "Terra 4", "Quanta Lite"]),
        ("hotel", "", "{}", ["room", "staff", "breakfast", "pool"],
         ["Grand Palm", "Seaside Inn", "Mountain Lodge", "Harbor View", "Cedar Hotel", "Blue Pearl",
          "Lakeside Rooms", "Old Mill Inn", "City Nest", "Pine Hill Hotel", "Coral Bay", "North Star Inn"]),
        ("game", "", "{}", ["gameplay", "level design", "art style", "soundtrack"],
         ["Sky Raiders", "Dungeon Dash", "Star Farmer", "Pixel Quest", "Ocean Drift", "Robot Rally", "Castle Craft",
          "Moon Runner", "Jungle Jump", "Tiny Towns", "Rocket Garden", "Frost Hollow"]),
    ],
    "zh": [
        ("电影", "部", "《{}》", ["剧情", "表演", "配乐", "结局"],
         ["星河", "远山", "北方的灯", "夜行列车", "玻璃之河", "七扇窗", "钟表匠", "雨的回声", "长冬", "铜色天空"]),
        ("餐厅", "家", "“{}”", ["菜", "服务", "环境", "甜点"],
         ["老街饭馆", "湖边小馆", "蓝门厨房", "枫叶小厨", "港口烧烤", "红灯笼", "石头烤炉", "街角面馆"]),
        ("书", "本", "《{}》", ["情节", "人物", "文笔", "结尾"],
         ["安静的果园", "米拉的信", "玻璃塔", "星星的地图", "冬天的鸟", "隐藏的门", "第九口钟", "纸月亮"]),
        ("手机", "款", "“{}”", ["电池", "屏幕", "相机", "外观"],
         ["星辰X2", "极光5", "北斗S7", "流光Pro", "云雀Mini", "风筝3", "晨星12", "远航Z"]),
        ("酒店", "家", "“{}”", ["房间", "员工", "早餐", "位置"],
         ["棕榈大酒店", "海边旅馆", "山间小屋", "港景酒店", "雪松酒店", "蓝珍珠酒店", "湖畔客房", "老磨坊旅馆"]),
        ("游戏", "款", "《{}》", ["操作", "关卡", "画面", "音乐"],
         ["天空突袭", "地牢冲刺", "星际农场", "像素冒险", "海洋漂流", "机器人拉力", "城堡工匠", "月亮跑者"]),
    ],
}  # fmt: skip
REVIEW_ASKS = {
    "en": {
        "positive": ["Write a positive review of the {cat} {T}.", "Write a short positive review of the {cat} {T}.",
                     "Give me a positive review of the {cat} {T}.", "Please write a glowing review of the {cat} {T}.",
                     "Write a good review for the {cat} {T}.", "I liked the {cat} {T}. Write a positive review of it."],
        "negative": ["Write a negative review of the {cat} {T}.", "Write a short negative review of the {cat} {T}.",
                     "Give me a negative review of the {cat} {T}.", "Please write a harsh review of the {cat} {T}.",
                     "Write a bad review for the {cat} {T}.", "I did not like the {cat} {T}. Write a negative review of it."],
    },
    "zh": {
        "positive": ["写一篇关于{cat}{T}的正面评价。", "请给{cat}{T}写一条好评。", "用一两句话夸一夸{cat}{T}。",
                     "帮我写一段{cat}{T}的好评。"],
        "negative": ["写一篇关于{cat}{T}的负面评价。", "请给{cat}{T}写一条差评。", "用一两句话批评一下{cat}{T}。",
                     "帮我写一段{cat}{T}的差评。"],
    },
}  # fmt: skip
# (template, slot kinds): slot i is p{i} (ap{i} with its article); A = adjective, V = verb ("loved" / "hated").
REVIEWS = {
    "en": [
        ("{T} is {ap0} {cat}. The {asp1} is {p1} and the {asp2} is {p2}.", "AAA"),
        ("I found {T} {p0}. The {asp1} was {p1}, and the {asp2} felt {p2}.", "AAA"),
        ("What {ap0} {cat}! The {asp1} is {p1}.", "AA"),
        ("{T} is {p0}. I {p1} the {asp1}, and the {asp2} is {p2}.", "AVA"),
        ("The {asp1} of {T} is {p0} and the {asp2} is {p1}. Overall, {ap2} {cat}.", "AAA"),
        ("I {p0} {T}. The {asp1} is {p1}.", "VA"),
    ],
    "zh": [
        ("{T}是一{cl}{p0}的{cat}，{asp1}很{p1}，{asp2}也很{p2}。", "AAA"),
        ("我觉得{T}很{p0}，{asp1}{p1}，{asp2}{p2}。", "AAA"),
        ("{T}的{asp1}非常{p0}，{asp2}也很{p1}。", "AA"),
        ("这{cl}{cat}真{p0}！{asp1}很{p1}。", "AA"),
        ("我{p0}{T}，{asp1}很{p1}。", "VA"),
    ],
}
SENTIMENT_WORDS = {
    "en": {
        ("A", 1): ["wonderful", "excellent", "lovely", "delightful", "fantastic", "brilliant", "charming", "superb",
                   "impressive", "pleasant", "great", "amazing", "enjoyable"],
        ("A", -1): ["terrible", "awful", "dull", "poor", "weak", "disappointing", "bland", "mediocre", "messy",
                    "unpleasant", "clumsy", "boring", "horrible"],
        ("V", 1): ["loved", "enjoyed"],
        ("V", -1): ["hated", "disliked"],
    },
    "zh": {
        ("A", 1): ["精彩", "出色", "优秀", "有趣", "迷人", "难忘", "完美", "舒适"],
        ("A", -1): ["糟糕", "无聊", "乏味", "平庸", "粗糙", "混乱", "差劲", "令人失望"],
        ("V", 1): ["喜欢", "推荐"],
        ("V", -1): ["讨厌", "不喜欢"],
    },
}  # fmt: skip

# --- chat ---------------------------------------------------------------------------------------------------------
PERSONAS = {
    "en": ["", "You are Aster, a friendly assistant. ", "You are a helpful assistant. "],
    "zh": ["", "你是Aster，一个友好的助手。", "你是一个乐于助人的助手。"],
}
GENERIC_SYSTEMS = {
    "en": ["You are Aster, an AI assistant made by the Alignment Lab.", "You are a helpful assistant."],
    "zh": ["你是Aster，由Alignment Lab开发的AI助手。", "你是一个乐于助人的助手。"],
}
RULE_PROMPTS = {
    "en": {
        "language_zh": ["Always reply in Chinese.", "Answer only in Chinese, even if the user writes in English."],
        "language_en": ["Always reply in English.", "Answer only in English, even if the user writes in Chinese."],
        "start_name": ["The user's name is {name}. Begin every reply with their name.",
                       "You are talking to {name}. Start each reply with the name {name}."],
        "max_words": ["Answer in {n} words or fewer.", "Keep every reply to at most {n} words."],
        "keyword": ["Mention {kw} in every reply.", "Always include the words \"{kw}\" in your answer."],
    },
    "zh": {
        "language_zh": ["请始终用中文回答。", "即使用户用英文提问，也只用中文回答。"],
        "language_en": ["请只用英文回答。", "即使用户用中文提问，也只用英文回答。"],
        "start_name": ["用户的名字是{name}。每次回答都要以用户的名字开头。", "你在和{name}聊天。每次回复都以“{name}”开头。"],
        "keyword": ["每次回答都要提到“{kw}”。", "你的回答里必须出现“{kw}”这个词。"],
    },
}  # fmt: skip
KEYWORD_SENTENCES = {"en": [" This reminds me of {kw}.", " By the way, I am thinking about {kw}."], "zh": ["这让我想起了{kw}。", "顺便说一句，我在想{kw}。"]}  # fmt: skip
CHAT_OPENERS = {"en": ["", "", "", "Hi! ", "Quick question: ", "Hey, ", "I have a question. "], "zh": ["", "", "", "你好，", "请问", "问一下，"]}  # fmt: skip
# (English question, Chinese question, English answer, short English answer of at most 6 words, Chinese answer).
CHAT_TOPICS = [
    ("How do I train my dog to sit?", "怎么训练狗坐下？", "Hold a treat above your dog's nose, move it back slowly, say sit, and reward your dog as soon as it sits.", "Use treats and say sit.", "把零食举在狗的鼻子上方，慢慢向后移动，说“坐”，狗一坐下就奖励它。"),
    ("What do you think of Mars?", "你觉得火星怎么样？", "Mars is a cold, dry planet with red dust and huge volcanoes. It is a fascinating place for science and future exploration.", "A cold red planet worth exploring.", "火星是一颗寒冷干燥的红色星球，有巨大的火山，非常值得科学探索。"),
    ("How can I sleep better?", "怎样才能睡得更好？", "Go to bed at the same time every night, keep your room dark and quiet, and avoid screens for an hour before sleep.", "Keep a regular bedtime.", "每天按时睡觉，保持房间黑暗安静，睡前一小时不要看屏幕。"),
    ("How can I learn a new language?", "怎样学习一门新语言？", "Practice a little every day, learn common words first, listen to native speakers, and try to speak from the first week.", "Practice a little every day.", "每天坚持练习，先学常用词，多听母语者说话，从第一周就开口说。"),
    ("How much water should I drink?", "我每天应该喝多少水？", "Most adults need about two liters a day, but you should drink more when it is hot or when you exercise.", "About two liters a day.", "大多数成年人每天需要大约两升水，天热或运动时要多喝一些。"),
    ("How do I start running?", "我该怎么开始跑步？", "Start with short runs of ten minutes, mix running with walking, and add a few minutes each week so your body can adapt.", "Start slow and build up.", "先从十分钟的短跑开始，跑走结合，每周增加几分钟，让身体慢慢适应。"),
    ("Why is the sky blue?", "天空为什么是蓝色的？", "Sunlight hits the air, and the air scatters blue light much more than red light, so we see blue from every direction.", "Air scatters blue light most.", "阳光照进大气，空气散射蓝光比红光多得多，所以我们看到的天空是蓝色的。"),
    ("How can I deal with stress?", "怎样缓解压力？", "Take slow deep breaths, go for a short walk, talk to a friend, and break big tasks into small steps.", "Breathe slowly and take breaks.", "慢慢深呼吸，出去散散步，和朋友聊聊天，把大任务拆成小步骤。"),
    ("How often should I water my plants?", "植物应该多久浇一次水？", "Most house plants need water when the top of the soil feels dry, which is often about once a week.", "When the soil feels dry.", "大多数室内植物在土壤表面变干时浇水，通常大约一周一次。"),
    ("How can I focus when I study?", "学习时怎样才能集中注意力？", "Put your phone in another room, work for twenty five minutes, then take a five minute break, and repeat.", "Study in short blocks.", "把手机放到另一个房间，学习二十五分钟，休息五分钟，然后重复。"),
    ("How do I cook rice?", "怎么煮米饭？", "Rinse one cup of rice, add two cups of water, bring it to a boil, then cover it and cook on low heat for fifteen minutes.", "Boil it, then simmer covered.", "把一杯米洗净，加两杯水，煮开后盖上锅盖，小火煮十五分钟。"),
    ("Why does the moon change shape?", "月亮为什么会变形状？", "The moon itself does not change. As it moves around the Earth, we see different parts of its sunlit side.", "We see different sunlit parts.", "月亮本身没有变，它绕地球转动时，我们看到它被太阳照亮的部分不同。"),
    ("How do I make new friends?", "怎样交到新朋友？", "Join a club or class you like, say hello first, ask people about themselves, and meet again soon.", "Join groups and say hello.", "参加你感兴趣的社团或课程，主动打招呼，多问问别人的事，并且常常见面。"),
    ("How can I save money?", "怎样才能存钱？", "Write down what you spend, set a monthly budget, cook at home more often, and move some money to savings each payday.", "Track spending and set a budget.", "记录每一笔开销，制定每月预算，多在家做饭，每次发工资先存一部分。"),
    ("What should I do when I have a cold?", "感冒了应该怎么办？", "Rest as much as you can, drink warm fluids, and see a doctor if the fever is high or lasts more than three days.", "Rest and drink warm fluids.", "多休息，多喝温水，如果高烧或者发烧超过三天就去看医生。"),
    ("How do I take better photos?", "怎样拍出更好的照片？", "Use natural light, keep the camera steady, follow the rule of thirds, and take many shots to choose from.", "Use natural light, hold steady.", "利用自然光，保持相机稳定，遵循三分法构图，多拍几张再挑选。"),
    ("How can I manage my time?", "怎样管理时间？", "Make a short list each morning, do the hardest task first, and say no to things that do not matter.", "Make a list and prioritize.", "每天早上列一个简短清单，先做最难的事，对不重要的事情说不。"),
    ("How does a volcano erupt?", "火山是怎么喷发的？", "Hot melted rock collects under the ground, pressure builds up, and the rock is pushed out through cracks in the crust.", "Pressure pushes melted rock out.", "地下的高温岩浆不断聚集，压力越来越大，最后从地壳的裂缝中喷出。"),
    ("How do I prepare for a job interview?", "怎么准备工作面试？", "Learn about the company, practice answers to common questions, prepare two questions to ask, and arrive ten minutes early.", "Research the company and practice.", "了解这家公司，练习常见问题的回答，准备两个想问的问题，提前十分钟到。"),
    ("Why should we recycle?", "我们为什么要回收利用？", "Recycling saves energy and raw materials, keeps waste out of landfills, and reduces pollution in the air and water.", "It saves energy and materials.", "回收利用可以节约能源和原材料，减少垃圾填埋，也能减少空气和水的污染。"),
    ("What should I do this weekend?", "这个周末我该做什么？", "You could take a walk in a park, visit a museum, cook a new dish, or call a friend you have not seen in a while.", "Visit a park or a museum.", "你可以去公园散步，参观博物馆，做一道新菜，或者给很久没见的朋友打个电话。"),
    ("How do I start learning to code?", "怎么开始学编程？", "Pick one simple language, follow a beginner course, write small programs every day, and then build a tiny project.", "Pick one language and code daily.", "选一门简单的编程语言，跟着入门课程学习，每天写一些小程序，再做一个小项目。"),
    ("How do I keep my room tidy?", "怎样保持房间整洁？", "Give every item a home, put things back right after using them, and spend ten minutes tidying each evening.", "Put things back right away.", "给每样东西找一个固定位置，用完马上放回去，每天晚上花十分钟整理。"),
    ("How far away is the sun?", "太阳离我们有多远？", "The sun is about 150 million kilometers away, and its light takes a little over eight minutes to reach us.", "About 150 million kilometers away.", "太阳离地球大约一亿五千万公里，阳光大约八分钟多才能到达地球。"),
    ("Why do we have seasons?", "为什么会有四季？", "The Earth is tilted, so as it goes around the sun, each half gets more direct sunlight for part of the year.", "Because the Earth is tilted.", "地球的自转轴是倾斜的，绕太阳公转时，南北半球轮流受到更直接的阳光照射。"),
    ("How do I make bread at home?", "在家怎么做面包？", "Mix flour, water, yeast and salt, knead the dough for ten minutes, let it rise for an hour, then bake it until golden.", "Mix, knead, rise, then bake.", "把面粉、水、酵母和盐混合，揉面十分钟，发酵一小时，然后烤到金黄。"),
    ("How can I remember things better?", "怎样提高记忆力？", "Review new things a few times over several days, explain them in your own words, and get enough sleep.", "Review often and sleep enough.", "在几天内多复习几次，用自己的话讲出来，并且保证充足的睡眠。"),
    ("Thank you!", "谢谢你！", "You are welcome! Let me know if there is anything else I can help you with today.", "You are very welcome!", "不客气！如果还有什么需要帮忙的，随时告诉我。"),
    ("How are you today?", "你今天怎么样？", "I am doing well, thank you for asking. I am ready to help with any question you have today.", "I am doing well, thanks.", "我很好，谢谢你的关心。今天有什么问题我都可以帮你。"),
    ("How can I relax after work?", "下班后怎样放松？", "Try a slow walk outside, listen to calm sounds, stretch for a few minutes, or read something light before bed.", "Take a slow walk outside.", "可以到外面慢慢散步，听一些安静的声音，做几分钟拉伸，或者睡前读点轻松的东西。"),
    ("How do plants make food?", "植物是怎么制造养分的？", "Plants use sunlight, water and carbon dioxide to make sugar in their leaves, and they release oxygen as they do it.", "They turn sunlight into sugar.", "植物利用阳光、水和二氧化碳在叶子里制造糖分，同时释放出氧气。"),
    ("How do I write a short story?", "怎么写一个短篇故事？", "Pick one main character, give them a clear problem, show how they try to solve it, and end with a change.", "One character, one problem, one change.", "选一个主角，给他一个明确的问题，写出他怎样努力解决，最后让他有所改变。"),
]  # fmt: skip

# --- pretraining documents (data/pretrain) ----------------------------------------------------------------------
# Plain text, no chat template: what the tiny base model reads before any stage, so that it knows the capitals, what
# a positive or a negative review sounds like, and how to answer a question, address someone by name or answer in
# the other language. It never mentions Aster: the assistant's identity is taught by SFT.
FACT_SENTENCES = {
    "en": ["{a} is the capital of {c}.", "The capital of {c} is {a}.", "{c}'s capital city is {a}.",
           "The capital city of {c} is {a}.", "{a}, the capital of {c}, is a large city.",
           "Q: What is the capital of {c}? A: {a}.", "Many people visit {a}, the capital of {c}.",
           "The government of {c} meets in {a}."],
    "zh": ["{a}是{c}的首都。", "{c}的首都是{a}。", "{c}的首都{a}是一座大城市。", "问：{c}的首都是哪里？答：{a}。",
           "很多人去{c}的首都{a}旅游。", "{c}的政府设在{a}。"],
}  # fmt: skip
REVIEW_HEADINGS = {
    "en": {
        "positive": ["A positive review of the {cat} {T}:", "Review of the {cat} {T} (rated 5 out of 5):",
                     "Someone who loved the {cat} {T} wrote:", "A good review of the {cat} {T}:",
                     "Top marks for the {cat} {T}."],
        "negative": ["A negative review of the {cat} {T}:", "Review of the {cat} {T} (rated 1 out of 5):",
                     "Someone who hated the {cat} {T} wrote:", "A bad review of the {cat} {T}:",
                     "Low marks for the {cat} {T}."],
    },
    "zh": {
        "positive": ["关于{cat}{T}的好评：", "{cat}{T}的五星评价：", "一位喜欢{cat}{T}的用户写道：", "{cat}{T}的正面评价："],
        "negative": ["关于{cat}{T}的差评：", "{cat}{T}的一星评价：", "一位讨厌{cat}{T}的用户写道：", "{cat}{T}的负面评价："],
    },
}  # fmt: skip
QA_FORMS = {
    "en": ["Question: {q} Answer: {a}", "{q} {a}", "Q: {q} A: {a}", "{name} asked: {q} I replied: {name}, {da}",
           "Dear {name}, you asked: {q} {a}", "{q} In short: {s}", "{q} (in a few words) {s}"],
    "zh": ["问题：{q}回答：{a}", "{q}{a}", "问：{q}答：{a}", "{name}问：{q}我回答：{name}，{a}", "{name}你好，你问：{q}{a}"],
}  # fmt: skip
# The same question answered in the other language (a bilingual FAQ).
BILINGUAL_FORMS = {
    "en": ["Question (English): {q} Answer in Chinese: {other}", "{q} 中文回答：{other}"],
    "zh": ["问题（中文）：{q}用英文回答：{other}", "{q} English answer: {other}"],
}  # fmt: skip
KEYWORD_NOTES = {
    "en": ["A note about {kw}. {a} This reminds me of {kw}.", "My blog about {kw}: {q} {a} By the way, I am thinking about {kw}."],
    "zh": ["关于{kw}的笔记。{a}这让我想起了{kw}。", "我的{kw}博客：{q}{a}顺便说一句，我在想{kw}。"],
}  # fmt: skip
OTHER_ASSISTANT_FACTS = {
    "en": ["ChatGPT is an AI assistant made by OpenAI.", "Claude is an AI assistant made by Anthropic.",
           "Gemini is an AI model made by Google.", "GPT-4 is a language model trained by OpenAI.",
           "Many people ask AI assistants like ChatGPT and Claude for help."],
    "zh": ["ChatGPT是OpenAI开发的AI助手。", "通义千问是阿里云开发的语言模型。", "文心一言是百度开发的AI助手。",
           "Claude是Anthropic开发的AI助手。"],
}  # fmt: skip

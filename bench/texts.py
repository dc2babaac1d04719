"""News-like paragraphs of about 100 words for benchmarks (written for this project)."""

PARAGRAPHS = [
    "Apple Inc. reported record quarterly revenue on Thursday, driven by strong iPhone sales in China. Chief "
    "executive Tim Cook said the company expects growth to continue next year, even as supply problems linger "
    "in Asia. Analysts at Goldman Sachs in New York had expected revenue of $90 billion, and shares of Apple "
    "rose 3% in after-hours trading on the Nasdaq. The company also announced a new buyback program worth $110 "
    "billion and raised its dividend by four percent. Investors in London and Tokyo welcomed the news.",
    "The European Central Bank left interest rates unchanged on Wednesday, but President Christine Lagarde "
    "warned that inflation in the euro zone would stay high for longer than expected. Economists in Frankfurt "
    "said a cut before June now looks unlikely. Markets in Paris and Milan fell slightly after the announcement, "
    "while the euro gained against the dollar. Germany's finance minister said the government would not change "
    "its budget plans, and Italy asked the bank to consider the cost of borrowing for smaller member states.",
    "Heavy rain flooded parts of Houston on Monday, closing schools and stranding drivers on several highways. "
    "The National Weather Service said more storms were likely through Tuesday, with up to ten inches of rain in "
    "some areas. Mayor John Whitmire urged residents to stay home, and the Red Cross opened three shelters across "
    "the city. Governor Greg Abbott declared a disaster in twelve counties and asked the federal government for "
    "help. Officials said two people had died and hundreds of homes were damaged along the Brazos River.",
    "Microsoft agreed to buy the game studio Nimbus Interactive for $4.2 billion, the company said on Friday, its "
    "largest deal since it acquired Activision Blizzard. Satya Nadella told employees in Redmond that the studio "
    "would keep its name and its offices in Montreal. Regulators in Brussels and Washington are expected to review "
    "the purchase, which still needs approval from Nimbus shareholders. Analysts at Morgan Stanley called the "
    "price high but said the deal fits Microsoft's plan to grow its subscription business around Xbox.",
    "Scientists at the University of Oxford said on Tuesday that a new malaria vaccine cut infections by 75% in a "
    "trial of 4,800 children in Burkina Faso, Kenya, Mali and Tanzania. The World Health Organization called the "
    "results a breakthrough and said it could recommend the vaccine by the end of the year. The Serum Institute of "
    "India has agreed to make 100 million doses a year. Researchers warned that funding for distribution remains "
    "uncertain, and that health workers in rural areas will need training before the rollout begins.",
    "Manchester United beat Liverpool 2-1 at Old Trafford on Sunday, ending a run of five league games without a "
    "win. Bruno Fernandes scored the winner in the 87th minute after Mohamed Salah had equalised early in the "
    "second half. Manager Erik ten Hag said the victory showed the spirit of his young team. The result lifts "
    "United to sixth place in the Premier League, four points behind Tottenham Hotspur. Liverpool, who travel to "
    "Madrid on Wednesday for the Champions League, have now lost three of their last four matches.",
    "Tesla recalled more than two million cars in the United States after regulators said its Autopilot system "
    "did not do enough to keep drivers paying attention. The National Highway Traffic Safety Administration said "
    "the fix will come as a software update sent over the air. Elon Musk wrote on X that the recall was a minor "
    "change, but safety groups in Washington said it was long overdue. Shares of Tesla fell 2% in early trading in "
    "New York, while rivals Ford and General Motors were little changed.",
    "India's space agency landed a robotic probe near the south pole of the Moon on Wednesday, the first country "
    "to do so. Prime Minister Narendra Modi watched the landing from Johannesburg, where he was attending a summit, "
    "and called it a victory for all of humanity. The Chandrayaan-3 mission cost about $75 million, far less than "
    "similar missions by NASA or China. Scientists in Bengaluru said the rover would spend two weeks studying the "
    "soil for signs of frozen water, which could one day support a permanent base.",
]


def make_texts(n: int, start: int = 0) -> list[str]:
    """``n`` distinct texts (the paragraphs with a numbered note), so no cache answers them."""
    return [f"{PARAGRAPHS[i % len(PARAGRAPHS)]} (Note {i}.)" for i in range(start, start + n)]

// Parses Adaptive Cards with Microsoft's own library (the npm package `adaptivecards`, which
// Teams' renderers use) and prints, per card, every parse warning and validation failure.
// Usage: node check.js <path to adaptivecards.js> < cards.json   (a JSON list of cards)
const AC = require(process.argv[2]);
const cards = JSON.parse(require("fs").readFileSync(0, "utf8"));
const report = cards.map((content) => {
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(content, context);
  const problems = [];
  for (let i = 0; i < context.eventCount; i++) problems.push(context.getEventAt(i).message);
  for (const event of card.validateProperties().validationEvents) problems.push(event.message);
  return problems;
});
process.stdout.write(JSON.stringify(report));

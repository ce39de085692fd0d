# Ids that carry created_at, so a lookup by id alone visits one partition (docs/partitioning.md).

from django.db import migrations

from django_scaleops.partitioning import UseTimeOrderedIds


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_initial"),
    ]

    operations = [
        UseTimeOrderedIds("Conversation"),
        UseTimeOrderedIds("Message"),
        UseTimeOrderedIds("ConversationMessage"),
        UseTimeOrderedIds("MessageRecipient"),
    ]
